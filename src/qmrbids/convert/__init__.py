"""DICOM to qMRI-BIDS conversion: plan (series -> BIDS paths), run (dcm2niix), sidecars, dataset files."""

from qmrbids.convert.api import ConvertReport, SeriesReport, convert
from qmrbids.convert.config import ConfigError, StudyConfig, load_config

__all__ = ["ConfigError", "ConvertReport", "SeriesReport", "StudyConfig", "convert", "load_config"]
