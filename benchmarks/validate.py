"""Validation speed and memory: ``qmrbids validate`` vs the official bids-validator-deno.

Run on demand: ``python benchmarks/validate.py [--subjects 2000] [--repeats 3] [--official-repeats 1]``.
Generates a qMRI dataset (per subject: VFA with 2 flip angles, MP2RAGE inv-1/inv-2/UNIT1,
8-echo MESE; 0-byte NIfTI placeholders, real JSON sidecars; 26 files per subject plus 5 at the
root: 52,005 files for 2,000 subjects), then times both validators on it with NIfTI headers
ignored and EMPTY_FILE configured away. Prints medians of wall time, CPU time and peak resident
memory, and qmrbids' speed-up over the official validator measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bidsschematools.data

from qmrbids.io import atomic_write_text

VFA = {"FlipAngle": None, "RepetitionTimeExcitation": 0.015, "PulseSequenceType": "SPGR", "EchoTime": 0.004,
       "MagneticFieldStrength": 3, "Manufacturer": "Siemens"}
MP2RAGE = {"InversionTime": None, "FlipAngle": None, "RepetitionTimeExcitation": 0.0071,
           "RepetitionTimePreparation": 5.0, "NumberShots": 176, "MagneticFieldStrength": 3, "EchoTime": 0.003}


def write_dataset(root: Path, subjects: int) -> int:
    """Write the benchmark dataset; returns the number of files."""
    root.mkdir(parents=True)
    files = 0

    def put(rel: str, content: str | None) -> None:
        nonlocal files
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if content is not None else "")
        files += 1

    put("dataset_description.json", json.dumps({"Name": "validate benchmark", "BIDSVersion": "1.10.0",
                                                "DatasetType": "raw", "Authors": ["A", "B"],
                                                "QMRIExtensionVersion": "0.1.0"}))
    put("README", "Benchmark dataset written by benchmarks/validate.py; 0-byte images.\n" * 5)
    put("CHANGES", "1.0.0 2026-01-01\n  - generated\n")
    put("participants.json", json.dumps({"participant_id": {"Description": "label"}}))
    labels = [f"sub-{i:04d}" for i in range(1, subjects + 1)]
    put("participants.tsv", "participant_id\n" + "".join(f"{s}\n" for s in labels))
    for sub in labels:
        for flip, angle in ((1, 3), (2, 20)):
            put(f"{sub}/anat/{sub}_flip-{flip}_VFA.nii.gz", None)
            put(f"{sub}/anat/{sub}_flip-{flip}_VFA.json", json.dumps({**VFA, "FlipAngle": angle}))
        for inv, (ti, fa) in ((1, (0.7, 4)), (2, (2.5, 5))):
            put(f"{sub}/anat/{sub}_inv-{inv}_MP2RAGE.nii.gz", None)
            put(f"{sub}/anat/{sub}_inv-{inv}_MP2RAGE.json", json.dumps({**MP2RAGE, "InversionTime": ti, "FlipAngle": fa}))
        put(f"{sub}/anat/{sub}_UNIT1.nii.gz", None)
        put(f"{sub}/anat/{sub}_UNIT1.json", json.dumps({"MagneticFieldStrength": 3, "Units": "arbitrary"}))
        for echo in range(1, 9):
            put(f"{sub}/anat/{sub}_echo-{echo}_MESE.nii.gz", None)
            put(f"{sub}/anat/{sub}_echo-{echo}_MESE.json", json.dumps({"EchoTime": round(0.01 * echo, 3),
                                                                       "MagneticFieldStrength": 3}))
    return files


def _run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of a command.

    CPU time is reported because a shared machine stretches wall time; it includes the children
    the command waited for (deno's worker threads are in-process and counted).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0, 1, 16):
        raise RuntimeError(f"{command[0]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _median(command: list[str], repeats: int) -> tuple[float, float, float]:
    runs = [_run(command) for _ in range(repeats)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of qmrbids (median reported)")
    parser.add_argument("--official-repeats", type=int, default=1, help="runs of bids-validator-deno")
    args = parser.parse_args()
    official = shutil.which("bids-validator-deno")
    work = Path(tempfile.mkdtemp(prefix="qmrbids-validate-bench-"))
    try:
        dataset = work / "dataset"
        files = write_dataset(dataset, args.subjects)
        config = work / "config.json"
        atomic_write_text(config, json.dumps({"ignore": [{"code": "EMPTY_FILE"}]}))
        rows = []
        ours = [sys.executable, "-m", "qmrbids", "validate", str(dataset), "--config", str(config),
                "--ignore-nifti-headers", "--format", "json", "-o", str(work / "ours.json")]
        rows.append(("qmrbids validate (qMRI rules)", *_median(ours, args.repeats)))
        rows.append(("qmrbids validate --strict-official", *_median([*ours, "--strict-official"], args.repeats)))
        if official:
            schema = Path(bidsschematools.data.__file__).parent / "schema.json"
            rows.append(("bids-validator-deno", *_median(
                [official, str(dataset), "--ignoreNiftiHeaders", "--config", str(config), "--schema", schema.as_uri(),
                 "--json", "--max-rows", "-1"], args.official_repeats)))
        report = json.loads((work / "ours.json").read_text())
        print(f"dataset: {args.subjects} subjects, {files} files; qmrbids found {report['summary']['error']} errors")
        print(f"{'validator':38s} {'wall s':>8s} {'cpu s':>8s} {'peak MB':>8s} {'wall ratio':>11s} {'cpu ratio':>10s}")
        reference = rows[-1] if official else None
        for name, wall, cpu, peak in rows:
            ratios = (f"{reference[1] / wall:10.1f}x {reference[2] / cpu:9.1f}x" if reference
                      else f"{'n/a':>11s} {'n/a':>10s}")
            print(f"{name:38s} {wall:8.2f} {cpu:8.2f} {peak:8.0f} {ratios}")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if not official:
            print("bids-validator-deno not found: install the test extra to compare")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
