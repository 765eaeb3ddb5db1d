"""Conversion speed and memory: bare dcm2niix vs ``qmrbids convert --jobs 1`` vs ``--jobs 2``.

Run on demand: ``python benchmarks/convert.py [--matrix 128] [--slices 32] [--repeats 3]``.
Writes a Siemens-style phantom of every protocol (plus any folder given with --extra), then
times, on that same input: dcm2niix alone (one call over the whole tree, as a user would run
it), qmrbids convert with 1 and 2 jobs, and the header scan alone. Prints medians of wall time,
peak resident memory (of the process tree), and ratios against bare dcm2niix.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dcm2niix

from qmrbids.dicom.scan import scan
from qmrbids.phantom import PhantomSettings, write_phantom


def _run(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a command and the children it waited for."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1):
        raise RuntimeError(f"{command[0]} failed with status {status}")
    return wall, usage.ru_maxrss / 1024


def _median(command_for_run, repeats: int) -> tuple[float, float]:
    walls, peaks = [], []
    for index in range(repeats):
        wall, peak = _run(command_for_run(index))
        walls.append(wall)
        peaks.append(peak)
    return statistics.median(walls), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra", type=Path, action="append", default=[], help="another DICOM folder to include")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        source = scratch / "input"  # one folder for both tools: the phantom plus copies of --extra
        write_phantom(source / "phantom", PhantomSettings(matrix=args.matrix, slices=args.slices, snr=50.0))
        for index, extra in enumerate(args.extra):
            shutil.copytree(extra, source / f"extra-{index}")
        files = sum(1 for p in source.rglob("*") if p.is_file())
        config = Path(__file__).resolve().parents[1] / "examples" / "phantom-study.yaml"

        def bare(index):
            out = scratch / f"bare-{index}"
            out.mkdir()
            return [dcm2niix.bin, "-b", "y", "-ba", "y", "-z", "y", "-o", str(out), str(source)]

        def qmrbids(jobs):
            return lambda index: [sys.executable, "-m", "qmrbids", "convert", str(source), "-o",
                                  str(scratch / f"q{jobs}-{index}"), "--config", str(config), "--jobs", str(jobs),
                                  "-q", "--format", "json"]

        rows = [("dcm2niix (bare)", *_median(bare, args.repeats)),
                ("qmrbids convert --jobs 1", *_median(qmrbids(1), args.repeats)),
                ("qmrbids convert --jobs 2", *_median(qmrbids(2), args.repeats))]
        scan_rates = {}
        for jobs in (1, 2):
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                scanned = scan([source], jobs=jobs)
                times.append(time.perf_counter() - start)
            scan_rates[jobs] = len(scanned.files) / statistics.median(times)

    print(f"input: phantom {args.matrix}x{args.matrix}x{args.slices}, all protocols"
          + (f", plus {', '.join(map(str, args.extra))}" if args.extra else "") + f"; {files} files; "
          f"median of {args.repeats}")
    print(f"{'':28}{'wall s':>9}{'vs bare':>9}{'peak MB':>9}{'vs bare MB':>11}")
    bare_wall, bare_peak = rows[0][1], rows[0][2]
    for name, wall, peak in rows:
        print(f"{name:28}{wall:9.2f}{wall / bare_wall:9.2f}{peak:9.0f}{peak - bare_peak:+11.0f}")
    print(f"header scan: {scan_rates[1]:.0f} files/s with 1 job, {scan_rates[2]:.0f} files/s with 2 jobs")


if __name__ == "__main__":
    main()
