"""De-identification speed: a plain pydicom read+write copy vs ``qmrbids deidentify`` (1 and 2 jobs),
and ``qmrbids convert`` vs ``convert --deidentify``.

Run on demand: ``python benchmarks/deidentify.py [--matrix 128] [--slices 32] [--repeats 3]``.
Writes a Siemens-style phantom of every protocol, then times on that input: copying every file
with pydicom (read, write; the floor any de-identifier pays), ``qmrbids deidentify`` with 1 and 2
jobs, and conversion with and without ``--deidentify``. Prints medians of wall time, files per
second and ratios against the pydicom copy (de-identification) and plain convert (conversion).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from qmrbids.dicom.scan import iter_sources
from qmrbids.phantom import PhantomSettings, write_phantom


def _copy_with_pydicom(source: Path, out: Path) -> None:
    for index, item in enumerate(iter_sources([source])):
        ds = pydicom.dcmread(item.path)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        (out / f"{index:06d}.dcm").write_bytes(buffer.getvalue())


def _median(run, repeats: int) -> float:
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    qmrbids = [sys.executable, "-m", "qmrbids"]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = scratch / "input"
        write_phantom(source, PhantomSettings(matrix=args.matrix, slices=args.slices, snr=50.0))
        dicom = source / "dicom"
        files = sum(1 for _ in iter_sources([dicom]))
        key = scratch / "key"
        key.write_text("0123456789abcdef0123456789abcdef")

        def fresh(name: str) -> Path:
            path = scratch / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir()
            return path

        def cli(*words: str) -> None:
            subprocess.run([*qmrbids, *words, "-q"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        rows = [
            ("pydicom read+write copy", _median(lambda: _copy_with_pydicom(dicom, fresh("copy")), args.repeats)),
            ("qmrbids deidentify --jobs 1", _median(lambda: cli("deidentify", str(dicom), "-o", str(fresh("d1")),
                                                                "--key-file", str(key), "--jobs", "1"), args.repeats)),
            ("qmrbids deidentify --jobs 2", _median(lambda: cli("deidentify", str(dicom), "-o", str(fresh("d2")),
                                                                "--key-file", str(key), "--jobs", "2"), args.repeats)),
        ]
        converts = [
            ("qmrbids convert --jobs 2", _median(lambda: cli("convert", str(dicom), "-o", str(fresh("c")) + "/ds",
                                                             "--jobs", "2"), args.repeats)),
            ("qmrbids convert --deidentify --jobs 2",
             _median(lambda: cli("convert", str(dicom), "-o", str(fresh("cd")) + "/ds", "--deidentify", "--key-file",
                                 str(key), "--jobs", "2"), args.repeats)),
        ]
    print(f"{files} files, matrix {args.matrix}, {args.slices} slices, median of {args.repeats}")
    print(f"{'step':42} {'wall s':>8} {'files/s':>9} {'ratio':>7}")
    for group in (rows, converts):
        reference = group[0][1]
        for name, wall in group:
            print(f"{name:42} {wall:8.2f} {files / wall:9.0f} {wall / reference:7.2f}")


if __name__ == "__main__":
    main()
