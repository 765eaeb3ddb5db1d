"""Model/Fit base: a model holds the acquisition, ``fit(data, mask)`` returns maps as attributes.

Data are arrays whose last axis holds the measurements of a voxel (flip angles, echoes, ...).
The base class walks the voxels in fixed-size chunks, so memory stays bounded by the input and
the output maps whatever the volume size, and each model only writes a vectorised
``fit_voxels`` on a (voxels, measurements) float64 block (float32 if the model asks).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits


class FitError(ValueError):
    """A model cannot be built or applied; the message names the missing or inconsistent input."""


class Fit:
    """The maps of one fit, by output name (``fit.T1map``), each of the data's spatial shape.

    Voxels outside the mask, and voxels where the model has no finite solution, are 0.
    """

    def __init__(self, maps: dict[str, np.ndarray]):
        self.maps = maps

    def __getattr__(self, name: str) -> np.ndarray:
        maps = self.__dict__.get("maps", {})
        if name in maps:
            return maps[name]
        raise AttributeError(name)


class Model(ABC):
    """Base of the quantitative models.

    Subclasses set ``name`` (command-line name), ``suffix`` (BIDS suffix of the input
    collection), ``outputs`` ({map suffix: Units}), ``goodness`` (name of a goodness-of-fit map
    the fit also returns, or None), ``reference`` and ``algorithm`` (sidecar provenance), and
    implement :meth:`fit_voxels`. Per-voxel inputs such as a B1 map are returned by
    :meth:`voxel_inputs` and arrive in ``fit_voxels`` as keyword arguments, chunked like the data.
    """

    name: ClassVar[str]
    suffix: ClassVar[str]
    outputs: ClassVar[dict[str, str]]
    goodness: ClassVar[str | None] = None
    reference: str  # may depend on the acquisition (set in __init__)
    algorithm: str
    #: Voxels per chunk; None sizes chunks to ~32k values so a block stays in the CPU cache.
    chunk_size: int | None = None
    uses_b1: ClassVar[bool] = False  # takes a relative transmit field map (``b1``)
    #: Threads working on chunks at once (numpy releases the GIL in its loops); 0 = every core.
    threads: int = 0
    #: Type of the blocks ``fit_voxels`` receives (float32 only where the model keeps 1e-4 with it).
    block_dtype: ClassVar[type] = np.float64

    #: Sidecar fields every input image must have (checked before anything is fitted).
    required: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_metadata(cls, metadata: list[dict], **context) -> Model:
        """The model for input images with these sidecars, given in :meth:`data_order`."""

    @staticmethod
    def data_order(metadata: list[dict], entities: list[dict]) -> list[int]:
        """Order in which the images of a collection form the data's last axis."""
        return list(range(len(metadata)))

    def parameters(self) -> dict:
        """Model parameters for the sidecars (JSON-ready numbers)."""
        return {}

    def voxel_inputs(self) -> dict[str, np.ndarray | float]:
        """Per-voxel inputs besides the data (scalars or arrays of the data's spatial shape)."""
        return {}

    @abstractmethod
    def fit_voxels(self, signals: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """The maps (by output name) of a (voxels, measurements) float64 block, vectorised."""

    @property
    def map_names(self) -> tuple[str, ...]:
        return tuple(self.outputs) + ((self.goodness,) if self.goodness else ())

    def fit(self, data, mask=None) -> Fit:
        """Fit every voxel of ``data`` (spatial shape + measurements) inside ``mask``."""
        data = np.asarray(data)
        shape = data.shape[:-1]
        # NIfTI arrays are Fortran-ordered: walk voxels in memory order so no copy of the volume is made
        order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
        flat = data.reshape(-1, data.shape[-1], order=order)
        n = flat.shape[0]
        keep = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1, order=order)
        if keep is not None and keep.size != n:
            raise FitError(f"mask shape {np.shape(mask)} does not match the data's {shape}")
        inputs = {}
        for key, value in self.voxel_inputs().items():
            value = np.asarray(value, dtype=np.float64)
            if value.ndim and value.shape != shape:
                raise FitError(f"{key} map shape {value.shape} does not match the data's {shape}")
            inputs[key] = value.reshape(-1, order=order) if value.ndim else value
        out = {name: np.zeros(n, dtype=np.float32) for name in self.map_names}
        chunk = self.chunk_size or max(1024, (1 << 15) // flat.shape[1])

        def run(start: int) -> None:
            span = slice(start, min(start + chunk, n))
            select = slice(None) if keep is None else keep[span]
            if keep is not None and not select.any():
                return
            block = np.asarray(flat[span][select], dtype=self.block_dtype)
            extra = {k: (v[span][select] if v.ndim else v) for k, v in inputs.items()}
            with np.errstate(all="ignore"):
                result = self.fit_voxels(block, **extra)
            for name in self.map_names:
                values = result[name]
                target = out[name][span]
                target[select] = np.where(np.isfinite(values), values, 0.0)

        starts = range(0, n, chunk)
        threads = min(self.threads or os.cpu_count() or 1, len(starts))
        # the chunks are the parallelism: BLAS threads on small products only contend (5-20x slower)
        with threadpool_limits(1, user_api="blas"):
            if threads <= 1:
                for start in starts:
                    run(start)
            else:  # chunks write disjoint slices of the outputs
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, starts))
        return Fit({name: values.reshape(shape, order=order) for name, values in out.items()})


class EchoTimeModel(Model):
    """A model whose data's last axis is the echoes of one collection (``self.te``, seconds)."""

    te: np.ndarray
    required: ClassVar[tuple[str, ...]] = ("EchoTime",)

    @classmethod
    def from_metadata(cls, metadata, **context):
        return cls([m["EchoTime"] for m in metadata])

    def parameters(self) -> dict:
        return {"EchoTime": self.te.tolist()}


def rowsum(values: np.ndarray) -> np.ndarray:
    """Sum of each row; a matrix-vector product is ~20x faster than ``sum(axis=1)`` on short rows."""
    return values @ np.ones(values.shape[1])


def r_squared(signals: np.ndarray, residual_ss: np.ndarray) -> np.ndarray:
    """Coefficient of determination 1 - SS_res / SS_tot of each row."""
    centred = signals - (rowsum(signals) / signals.shape[1])[:, None]
    return 1.0 - residual_ss / rowsum(centred * centred)


def as_angles(flip_angles_deg) -> np.ndarray:
    angles = np.asarray(flip_angles_deg, dtype=np.float64).reshape(-1)
    if angles.size == 0 or np.any(angles <= 0) or np.any(angles >= 180):
        raise FitError(f"flip angles must lie in (0, 180) degrees, not {angles.tolist()}")
    return np.deg2rad(angles)


def degrees(angles_rad: np.ndarray) -> list[float]:
    """Flip angles in degrees for sidecars, free of radian round-trip noise."""
    return np.round(np.rad2deg(angles_rad), 9).tolist()


def b1_input(b1) -> dict[str, np.ndarray | float]:
    """The ``b1`` voxel input (relative transmit field, 1 = nominal); 1 everywhere when absent."""
    return {"b1": 1.0 if b1 is None else b1}
