"""Fitting speed and memory: qmrbids models vs a plain-numpy and a per-voxel scipy reference.

Run on demand: ``python benchmarks/fit.py [--shape 256 256 176] [--repeats 3] [--scipy-voxels 300]``.
Each model runs in a fresh process on a float32 volume of the given shape simulated with the
phantom's signal equations (SNR 50), like data read from NIfTI. Timed separately: writing and
reading that volume as NIfTI (I/O); fitting the whole volume with qmrbids (median of --repeats
for the closed forms, one run for the iterative IR, MESE and MP2RAGE fits); a plain-numpy
implementation (the textbook vectorised formula on the whole array, no chunks; for IR a
brute-force grid; on a subsample where it would not fit in memory or time); and a per-voxel scipy
``curve_fit`` loop (the ukat / pyqmrlab way) on --scipy-voxels voxels. Peak memory of the fit =
the input volume + the most that the fit allocated at once (tracemalloc; numpy reports its
buffers). Goals on 2 cores: closed forms >= 1e7 voxels/s, IR >= 1e5 voxels/s, peak memory
<= 2 GB for the 32-echo MESE volume.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
from scipy.optimize import brentq, curve_fit

MS = 1e-3
MODELS = ("vfa", "tb1dam", "mtsat", "mtr", "dwi", "megre", "mp2rage", "irt1", "mese")
CLOSED_FORM = {"vfa", "tb1dam", "mtsat", "mtr", "dwi", "megre"}


def _simulate(name: str, shape, rng):
    """(model, float32 data, parameter used by the references) for ``name`` on ``shape``."""
    from qmrbids import fit
    from qmrbids.phantom import signals as sg

    n = int(np.prod(shape))
    t1 = rng.uniform(0.3, 3.0, n)
    t2 = rng.uniform(0.02, 0.3, n)
    m0 = np.ones(n)
    b1 = rng.uniform(0.8, 1.2, n)
    if name == "vfa":
        x = np.array([3.0, 10.0, 20.0])
        model = fit.VFAModel(x, 0.015, b1=b1.reshape(shape))
        make = lambda a: sg.spgr(m0, t1, t2, b1, a, 0.015, 0.002)  # noqa: E731
    elif name == "tb1dam":
        x = np.array([60.0, 120.0])
        model = fit.TB1DAMModel(x)
        make = lambda a: sg.spgr(m0, t1 / 4, t2, b1, a, 10.0, 0.003)  # noqa: E731
    elif name == "mtsat":
        x = np.array([6.0, 6.0, 20.0])
        model = fit.MTsatModel(x, [0.028] * 3, b1=b1.reshape(shape))
        mts = rng.uniform(0.005, 0.03, n)
        make = lambda i: sg.spgr(m0, t1, t2, b1, x[int(i)], 0.028, 0.0025, mts if i == 1 else None)  # noqa: E731
        x = np.arange(3.0)
    elif name == "mtr":
        x = np.array([0.0, 1.0])
        model = fit.MTRModel()
        mts = rng.uniform(0.005, 0.03, n)
        make = lambda i: sg.spgr(m0, t1, t2, b1, 6.0, 0.028, 0.0025, mts if i else None)  # noqa: E731
    elif name == "dwi":
        x = np.array([0.0, 1000.0])
        model = fit.DWIModel(x)
        adc = rng.uniform(3e-4, 3e-3, n)
        make = lambda b: sg.dwi(m0, t1, t2, adc, 4.0, 0.06, b)  # noqa: E731
    elif name == "megre":
        x = np.arange(1, 13) * 3.0 * MS
        model = fit.MEGREModel(x)
        t2s = rng.uniform(0.01, 0.1, n)
        make = lambda te: sg.spgr(m0, t1, t2s, b1, 15.0, 0.04, te)  # noqa: E731
    elif name == "irt1":
        x = np.array([50.0, 400.0, 1100.0, 2500.0]) * MS
        model = fit.IRT1Model(x)
        make = lambda ti: sg.ir_se(m0, t1, t2, ti, 10.0, 0.012, 0.96)  # noqa: E731
    elif name == "mese":
        x = np.arange(1, 33) * 10.0 * MS
        model = fit.MESEModel(x)
        make = lambda te: sg.mese(m0, t1, t2, 4.0, te)  # noqa: E731
    elif name == "mp2rage":
        x = np.array([0.0])
        model = fit.MP2RAGEModel(inversion_times_s=[0.7, 2.5], flip_angles_deg=[4, 5],
                                 repetition_time_excitation_s=0.007, repetition_time_preparation_s=5.0,
                                 number_shots=160, b1=b1.reshape(shape))
        t1 = rng.uniform(0.5, 3.5, n)
        make = lambda _: model.uni(t1, b1) + 0.01 * rng.standard_normal(n)  # noqa: E731
    data = np.empty((*shape, x.size), dtype=np.float32)
    for k, value in enumerate(x):
        s = make(value)
        if name != "mp2rage":
            sigma = 1.0 / 50 * 0.1  # image SNR ~50 for the brightest (~0.1 of M0) gradient-echo images
            s = np.abs(s + sigma * (rng.standard_normal(n) + 1j * rng.standard_normal(n)))
        data[..., k] = s.reshape(shape)
        del s
    return model, data, x


def _numpy_reference(name, data, x, model):
    """The textbook vectorised numpy formula on the whole array (no chunks, sum over the last axis)."""
    y = data.reshape(-1, data.shape[-1]).astype(np.float64)
    if name in ("vfa", "mtsat"):
        a = np.deg2rad(model.angles) * model.b1.reshape(-1, 1)
        yy, xx = y / np.sin(a), y / np.tan(a)
        slope = ((xx - xx.mean(-1, keepdims=True)) * (yy - yy.mean(-1, keepdims=True))).sum(-1) / \
            ((xx - xx.mean(-1, keepdims=True)) ** 2).sum(-1)
        return -0.015 / np.log(slope)
    if name == "tb1dam":
        return np.rad2deg(np.arccos(y[:, 1] / (2 * y[:, 0]))) / 60.0
    if name == "mtr":
        return 100 * (y[:, 0] - y[:, 1]) / y[:, 0]
    if name in ("dwi", "megre", "mese"):
        return np.polyfit(x, np.log(y.T), 1)[0]
    if name == "mp2rage":
        uni = model.uni(np.geomspace(0.3, 5.0, 2000), 1.0)
        return np.interp(-y[:, 0], -uni, np.geomspace(0.3, 5.0, 2000))
    if name == "irt1":  # brute-force RD-NLS: every T1 of a 1000-point grid, every polarity
        grid = np.geomspace(0.05, 5.0, 1000)
        best = np.full(len(y), np.inf)
        for p in range(len(x)):
            signed = y * np.where(np.arange(len(x)) < p, -1.0, 1.0)
            for t1 in grid[::10]:  # a 100-point grid keeps this reference finishable
                basis = np.stack([np.ones_like(x), np.exp(-x / t1)], 1)
                coef = np.linalg.lstsq(basis, signed.T, rcond=None)[0]
                best = np.minimum(best, ((signed.T - basis @ coef) ** 2).sum(0))
        return best
    raise ValueError(name)


def _scipy_reference(name, data, x, model, voxels):
    """Per-voxel scipy.optimize.curve_fit over ``voxels`` voxels (the slow, common way)."""
    y = data.reshape(-1, data.shape[-1])[:voxels].astype(np.float64)
    b1 = model.b1.reshape(-1)[:voxels] if getattr(model, "b1", None) is not None else np.ones(voxels)
    for i in range(voxels):
        s = y[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if name in ("vfa", "mtsat"):
                    a = np.deg2rad(model.angles) * b1[i]
                    curve_fit(lambda a_, m0, t1: m0 * np.sin(a_) * (1 - np.exp(-0.015 / t1)) /
                              (1 - np.cos(a_) * np.exp(-0.015 / t1)), a, s, p0=(1.0, 1.0))
                elif name == "tb1dam":
                    brentq(lambda b: np.sin(2 * b * np.pi / 3) / np.sin(b * np.pi / 3) - s[1] / s[0], 0.2, 1.45)
                elif name == "mtr":
                    100 * (s[0] - s[1]) / s[0]
                elif name in ("dwi", "megre", "mese"):
                    curve_fit(lambda t, s0, r: s0 * np.exp(-r * t), x, s, p0=(s[0], 1.0 / max(x[-1], 1e-3)))
                elif name == "irt1":
                    curve_fit(lambda t, a, b, t1: np.abs(a + b * np.exp(-t / t1)), x, s, p0=(1.0, -2.0, 1.0))
                elif name == "mp2rage":
                    brentq(lambda t1: float(model.uni(np.array([t1]), np.array([b1[i]]))[0]) - s[0], 0.15, 5.0)
            except (RuntimeError, ValueError):
                pass


def _measure(name, shape, repeats, scipy_voxels, queue):
    rng = np.random.default_rng(0)
    model, data, x = _simulate(name, shape, rng)
    n = int(np.prod(shape))
    import nibabel as nib

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "data.nii"
        start = time.perf_counter()
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
        write = time.perf_counter() - start
        start = time.perf_counter()
        data = np.array(nib.load(str(path)).dataobj, dtype=np.float32)  # a real read, not a lazy memmap
        read = time.perf_counter() - start
    times = []
    for _ in range(repeats if name in CLOSED_FORM else 1):  # the iterative models take minutes
        start = time.perf_counter()
        model.fit(data)
        times.append(time.perf_counter() - start)
    # memory in a separate run: tracing every allocation slows the many small chunk operations
    tracemalloc.start()  # numpy reports its allocations: data + everything the fit allocates
    model.fit(data)
    peak = (data.nbytes + tracemalloc.get_traced_memory()[1]) / 2**20
    tracemalloc.stop()
    sub = data.reshape(-1, data.shape[-1])
    take = n if name in CLOSED_FORM - {"megre"} else min(n, 200_000 if name != "irt1" else 20_000)
    ref_data = sub[:take].reshape(take, 1, 1, -1)
    if getattr(model, "b1", None) is not None:
        model.b1 = model.b1.reshape(-1)[:take]
    start = time.perf_counter()
    _numpy_reference(name, ref_data, x, model)
    numpy_rate = take / (time.perf_counter() - start)
    start = time.perf_counter()
    _scipy_reference(name, ref_data, x, model, min(scipy_voxels, take))
    scipy_rate = min(scipy_voxels, take) / (time.perf_counter() - start)
    queue.put((name, n / statistics.median(times), numpy_rate, take, scipy_rate, peak, write, read, data.shape[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 176))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scipy-voxels", type=int, default=300)
    parser.add_argument("--model", action="append", choices=MODELS, help="model to time (repeatable; default all)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    rows = []
    for name in args.model or MODELS:
        queue = context.Queue()
        process = context.Process(target=_measure,
                                  args=(name, tuple(args.shape), args.repeats, args.scipy_voxels, queue))
        process.start()
        rows.append(queue.get())
        process.join()
    voxels = int(np.prod(args.shape))
    print(f"volume {'x'.join(map(str, args.shape))} = {voxels:,} voxels, float32; "
          f"median of {args.repeats} fits (closed forms)\n")
    print(f"{'model':8} {'meas':>4} {'qmrbids vox/s':>14} {'numpy vox/s':>12} {'(on)':>10} {'scipy vox/s':>12} "
          f"{'x numpy':>8} {'x scipy':>9} {'fit MB':>8} {'write s':>8} {'read s':>7}  goal")
    for name, rate, numpy_rate, take, scipy_rate, peak, write, read, k in rows:
        goal = ("1e7 vox/s" if name in CLOSED_FORM else "1e5 vox/s" if name == "irt1" else "") + \
            (", 2 GB" if name == "mese" else "")
        met = ((rate >= 1e7) if name in CLOSED_FORM else (rate >= 1e5) if name == "irt1" else True) and \
            (peak <= 2048 if name == "mese" else True)
        print(f"{name:8} {k:>4} {rate:>14,.0f} {numpy_rate:>12,.0f} {take:>10,} {scipy_rate:>12,.0f} "
              f"{rate / numpy_rate:>8.1f} {rate / scipy_rate:>9.0f} {peak:>8.0f} {write:>8.2f} {read:>7.2f}  "
              f"{goal}{' met' if goal and met else ' MISSED' if goal else ''}")


if __name__ == "__main__":
    main()
