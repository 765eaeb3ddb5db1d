"""qmrbids: vendor DICOM to quantitative-MRI BIDS, with validation, fitting and quality control."""

__version__ = "0.1.0"
