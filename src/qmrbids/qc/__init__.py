"""Quality control: protocol compliance, image-quality metrics, phantom metrology, management and HTML reports."""

from qmrbids.qc.api import FORMATS, QcResult, run_qc, write_outputs
from qmrbids.qc.init import draft_protocol, protocol_yaml
from qmrbids.qc.inventory import DatasetError
from qmrbids.qc.protocol import Protocol, ProtocolError, load_protocol

__all__ = ["FORMATS", "DatasetError", "Protocol", "ProtocolError", "QcResult", "draft_protocol", "load_protocol",
           "protocol_yaml", "run_qc", "write_outputs"]
