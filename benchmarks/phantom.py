"""Time the digital phantom writer against dcm2niix reading back the same files.

Run on demand: ``python benchmarks/phantom.py [--repeats N] [--matrix M] [--slices S]``.
Prints, per vendor, the median wall time to write every protocol, files per second, and the
median wall time of a bare dcm2niix conversion of that output measured in the same run (a
reference for "how long does touching these files take"), with their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dcm2niix

from qmrbids.phantom import VENDORS, PhantomSettings, write_phantom


def _median_seconds(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--slices", type=int, default=4)
    args = parser.parse_args()
    print(f"phantom, all protocols, matrix {args.matrix}, {args.slices} slices, median of {args.repeats}")
    print(f"{'vendor':<8} {'files':>6} {'phantom s':>10} {'files/s':>9} {'dcm2niix s':>11} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        for vendor in VENDORS:
            out = Path(scratch) / vendor
            settings = PhantomSettings(vendor=vendor, matrix=args.matrix, slices=args.slices, snr=50.0)
            result = {}

            def write(out=out, settings=settings, result=result):
                result["r"] = write_phantom(out, settings)

            phantom_s = _median_seconds(write, args.repeats)
            nifti = Path(scratch) / f"{vendor}-nifti"
            nifti.mkdir()

            def convert(out=out, nifti=nifti):
                subprocess.run([dcm2niix.bin, "-z", "n", "-w", "1", "-o", str(nifti), str(out / "dicom")],
                               check=True, capture_output=True)

            dcm2niix_s = _median_seconds(convert, args.repeats)
            files = result["r"].files
            print(f"{vendor:<8} {files:>6} {phantom_s:>10.2f} {files / phantom_s:>9.0f} {dcm2niix_s:>11.2f} "
                  f"{phantom_s / dcm2niix_s:>6.2f}")


if __name__ == "__main__":
    main()
