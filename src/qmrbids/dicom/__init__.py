"""DICOM side of qmrbids: header-only scanning, series grouping and classification."""
