"""Simulate the phantom's protocols: true maps in, series of image volumes out.

Each protocol of ``protocols.yaml`` becomes one or more :class:`Series`; each series holds its
volumes (one per echo, b-value or image part) as physical values: magnitudes in units of the
water M0, phases in radians, the MP2RAGE UNI image in [-0.5, 0.5]. Noise is complex Gaussian
with sigma = 1/SNR of the water M0, added before magnitudes are taken (so magnitudes are Rician).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import yaml

from qmrbids.phantom import signals
from qmrbids.phantom.object import Truth
from qmrbids.resources import package_file


@cache
def protocol_definitions() -> dict:
    """All protocols of the phantom, in acquisition order (``protocols.yaml``)."""
    return yaml.safe_load(package_file("phantom", "protocols.yaml").read_text())


PROTOCOLS: tuple[str, ...] = tuple(protocol_definitions())


@dataclass
class Volume:
    """One 3-D image of a series, with the acquisition values that belong to it (ms, degrees)."""

    values: np.ndarray
    part: str = "magnitude"  # magnitude | phase | uni
    echo_number: int = 1
    echo_time: float | None = None
    flip_angle: float | None = None
    inversion_time: float | None = None
    bvalue: float | None = None
    direction: tuple[float, float, float] | None = None
    mt: bool | None = None


@dataclass
class Series:
    """A series as a console exports it; ``acquisition`` holds the values common to its volumes."""

    protocol: str
    label: str
    kind: str
    volumes: list[Volume]
    acquisition: dict

    @property
    def parts(self) -> list[str]:
        return sorted({v.part for v in self.volumes})


def _echo_times(spec: dict) -> list[float]:
    return [spec["first"] + i * spec["spacing"] for i in range(spec["count"])]


def _noisy(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Complex signal plus complex Gaussian noise (unchanged when sigma is 0)."""
    if sigma == 0:
        return signal.astype(np.complex128)
    noise = rng.standard_normal(signal.shape) + 1j * rng.standard_normal(signal.shape)
    return signal + sigma * noise


def simulate_protocol(name: str, truth: Truth, snr: float, seed: int) -> list[Series]:
    """The series of protocol ``name`` acquired on ``truth``.

    The random stream depends only on (seed, protocol name), so a protocol's images are the same
    whichever other protocols are simulated with it.
    """
    spec = protocol_definitions()[name]
    acq = spec["acquisition"]
    m = truth.maps
    sigma = 0.0 if snr == 0 else 1.0 / snr
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    ms = 1e-3
    out: list[Series] = []

    def series(entry: dict, volumes: list[Volume], extra: dict | None = None) -> Series:
        return Series(name, entry["label"], spec["kind"], volumes, {**acq, **(extra or {})})

    signal = spec["signal"]
    if signal == "spgr":
        for entry in spec["series"]:
            flip = entry["FlipAngle"]
            mtsat = m["MTsat"] if entry.get("MT") else None
            s = signals.spgr(m["M0"], m["T1"], m["T2star"], m["B1"], flip, acq["RepetitionTime"] * ms,
                             acq["EchoTime"] * ms, mtsat)
            vol = Volume(np.abs(_noisy(s, sigma, rng)), echo_time=acq["EchoTime"], flip_angle=flip,
                         mt=entry.get("MT"))
            out.append(series(entry, [vol], {"FlipAngle": flip}))
    elif signal == "ir_se":
        for entry in spec["series"]:
            ti = entry["InversionTime"]
            s = signals.ir_se(m["M0"], m["T1"], m["T2"], ti * ms, acq["RepetitionTime"] * ms,
                              acq["EchoTime"] * ms, acq["InversionEfficiency"])
            vol = Volume(np.abs(_noisy(s, sigma, rng)), echo_time=acq["EchoTime"], flip_angle=acq["FlipAngle"],
                         inversion_time=ti)
            out.append(series(entry, [vol], {"InversionTime": ti}))
    elif signal == "mese":
        entry = spec["series"][0]
        vols = []
        for k, te in enumerate(_echo_times(acq["EchoTimes"]), start=1):
            s = signals.mese(m["M0"], m["T1"], m["T2"], acq["RepetitionTime"] * ms, te * ms)
            vols.append(Volume(np.abs(_noisy(s, sigma, rng)), echo_number=k, echo_time=te, flip_angle=acq["FlipAngle"]))
        out.append(series(entry, vols))
    elif signal == "megre":
        entry = spec["series"][0]
        vols = []
        for k, te in enumerate(_echo_times(acq["EchoTimes"]), start=1):
            s = _noisy(signals.megre(m["M0"], m["T1"], m["T2star"], m["B1"], m["B0"], acq["FlipAngle"],
                                     acq["RepetitionTime"] * ms, te * ms), sigma, rng)
            common = {"echo_number": k, "echo_time": te, "flip_angle": acq["FlipAngle"]}
            vols.append(Volume(np.abs(s), part="magnitude", **common))
            if "phase" in entry.get("parts", []):
                vols.append(Volume(np.angle(s), part="phase", **common))
        out.append(series(entry, vols))
    elif signal == "mp2rage":
        g1, g2 = signals.mp2rage(
            m["M0"], m["T1"], m["T2star"], m["B1"],
            tr_prep=acq["RepetitionTimePreparation"] * ms, tr_exc=acq["RepetitionTimeExcitation"] * ms,
            n_shots=acq["NumberShots"], inversion_times=[t * ms for t in acq["InversionTimes"]],
            flip_degs=acq["FlipAngles"], te=acq["EchoTime"] * ms, efficiency=acq["InversionEfficiency"],
        )
        g1, g2 = _noisy(g1, sigma, rng), _noisy(g2, sigma, rng)
        images = {"inv1": (np.abs(g1), "magnitude", 0), "inv2": (np.abs(g2), "magnitude", 1),
                  "uni": (signals.uni(g1, g2), "uni", None)}
        for entry in spec["series"]:
            values, part, index = images[entry["image"]]
            flip = acq["FlipAngles"][0 if index is None else index]
            ti = None if index is None else acq["InversionTimes"][index]
            vol = Volume(values, part=part, echo_time=acq["EchoTime"], flip_angle=flip, inversion_time=ti)
            out.append(series(entry, [vol], {"FlipAngle": flip, "InversionTime": ti}))
    elif signal == "dwi":
        for entry in spec["series"]:
            vols = []
            for b, g in zip(entry["bvalues"], entry["directions"], strict=True):
                s = signals.dwi(m["M0"], m["T1"], m["T2"], m["ADC"], acq["RepetitionTime"] * ms,
                                acq["EchoTime"] * ms, b)
                vols.append(Volume(np.abs(_noisy(s, sigma, rng)), echo_time=acq["EchoTime"],
                                   flip_angle=acq["FlipAngle"], bvalue=float(b), direction=tuple(map(float, g))))
            out.append(series(entry, vols))
    else:  # pragma: no cover - protocols.yaml and this module are kept in step by the tests
        raise ValueError(f"protocol {name}: unknown signal model {signal!r}")
    return out
