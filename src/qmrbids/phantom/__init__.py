"""Digital phantom: vendor-style qMRI DICOM with known quantitative truth.

>>> from qmrbids.phantom import PhantomSettings, write_phantom
>>> write_phantom(Path("out"), PhantomSettings(vendor="ge", protocols=("vfa",), snr=50))  # doctest: +SKIP
"""

from qmrbids.phantom.acquisition import PROTOCOLS, simulate_protocol
from qmrbids.phantom.build import PhantomError, PhantomResult, PhantomSettings, affine_ras, write_phantom
from qmrbids.phantom.dicom import VENDORS
from qmrbids.phantom.object import Grid, Truth, make_truth

__all__ = [
    "PROTOCOLS",
    "VENDORS",
    "Grid",
    "PhantomError",
    "PhantomResult",
    "PhantomSettings",
    "Truth",
    "affine_ras",
    "make_truth",
    "simulate_protocol",
    "write_phantom",
]
