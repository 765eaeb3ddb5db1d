"""Schema-driven BIDS validation with the qMRI extension: ``validate_dataset(path, Options())``."""

from qmrbids.validate.engine import Options, Report, ValidationError, load_config, validate_dataset
from qmrbids.validate.issues import Issue

__all__ = ["Issue", "Options", "Report", "ValidationError", "load_config", "validate_dataset"]
