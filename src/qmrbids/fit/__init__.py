"""Quantitative maps: one model per family in the Model/Fit style, and the BIDS derivative runner.

>>> from qmrbids.fit import VFAModel
>>> VFAModel([3, 10, 20], 0.015).fit(data, mask).T1map  # doctest: +SKIP
"""

from qmrbids.fit.base import Fit, FitError, Model
from qmrbids.fit.dwi import DWIModel
from qmrbids.fit.irt1 import IRT1Model
from qmrbids.fit.megre import MEGREModel
from qmrbids.fit.mese import MESEModel
from qmrbids.fit.mp2rage import MP2RAGEModel, uni_from_inversions
from qmrbids.fit.mt import MTRModel, MTsatModel
from qmrbids.fit.tb1dam import TB1DAMModel
from qmrbids.fit.vfa import VFAModel

#: Every model by its command-line name, B1 mapping first (other models use its output).
MODELS: dict[str, type[Model]] = {
    cls.name: cls
    for cls in (TB1DAMModel, VFAModel, IRT1Model, MP2RAGEModel, MESEModel, MEGREModel, MTsatModel, MTRModel, DWIModel)
}

__all__ = [
    "MODELS", "DWIModel", "Fit", "FitError", "IRT1Model", "MEGREModel", "MESEModel", "MP2RAGEModel", "MTRModel",
    "MTsatModel", "Model", "TB1DAMModel", "VFAModel", "uni_from_inversions",
]
