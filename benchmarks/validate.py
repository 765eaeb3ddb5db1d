"""Validation speed and memory: ``qmrbids validate`` vs the official bids-validator-deno.

Run on demand: ``python benchmarks/validate.py [--subjects 2000] [--repeats 3] [--official-repeats 1]
[--sidecars real|minimal]``.
Generates a qMRI dataset (per subject: VFA with 2 flip angles, MP2RAGE inv-1/inv-2/UNIT1,
8-echo MESE; 0-byte NIfTI placeholders; 26 files per subject plus 5 at the root: 52,005 files for
2,000 subjects), then times both validators on it with NIfTI headers ignored and EMPTY_FILE
configured away. ``real`` sidecars (the default) are those qmrbids convert writes for the
digital phantom (dcm2niix fields plus provenance, ~45 keys), with each subject's hashes and
conversion time made unique as in a real study; ``minimal`` sidecars hold only the 2-7 fields
the fits need. Prints medians of wall time, CPU time and peak memory (proportional set size
summed over the validator's processes, sampled every 20 ms), and the speed-up over the official
validator measured in the same run, the validators' runs taken in turns.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bidsschematools.data

from qmrbids.io import atomic_write_text

STUDY_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "phantom-study.yaml"
VFA = {"FlipAngle": None, "RepetitionTimeExcitation": 0.015, "PulseSequenceType": "SPGR", "EchoTime": 0.004,
       "MagneticFieldStrength": 3, "Manufacturer": "Siemens"}
MP2RAGE = {"InversionTime": None, "FlipAngle": None, "RepetitionTimeExcitation": 0.0071,
           "RepetitionTimePreparation": 5.0, "NumberShots": 176, "MagneticFieldStrength": 3, "EchoTime": 0.003}


def real_sidecars(work: Path) -> dict[str, dict]:
    """Sidecars by file stem (``flip-1_VFA``, ...) from converting the phantom's VFA, MP2RAGE and MESE."""
    qmrbids = [sys.executable, "-m", "qmrbids"]
    subprocess.run([*qmrbids, "phantom", str(work / "phantom"), "--matrix", "16", "--slices", "2", "-q",
                    "--protocol", "vfa", "--protocol", "mp2rage", "--protocol", "mese"], check=True)
    subprocess.run([*qmrbids, "convert", str(work / "phantom" / "dicom"), "-o", str(work / "bids"), "-q",
                    "--config", str(STUDY_CONFIG), "--subject", "PHANTOM"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    anat = work / "bids" / "sub-PHANTOM" / "anat"
    stems = {"flip-1_VFA": "flip-1_VFA", "flip-2_VFA": "flip-3_VFA", "inv-1_MP2RAGE": "inv-1_MP2RAGE",
             "inv-2_MP2RAGE": "inv-2_MP2RAGE", "UNIT1": "UNIT1", **{f"echo-{e}_MESE": f"echo-{e}_MESE" for e in range(1, 9)}}
    return {stem: json.loads((anat / f"sub-PHANTOM_{source}.json").read_text()) for stem, source in stems.items()}


def minimal_sidecars() -> dict[str, dict]:
    out = {}
    for flip, angle in ((1, 3), (2, 20)):
        out[f"flip-{flip}_VFA"] = {**VFA, "FlipAngle": angle}
    for inv, (ti, fa) in ((1, (0.7, 4)), (2, (2.5, 5))):
        out[f"inv-{inv}_MP2RAGE"] = {**MP2RAGE, "InversionTime": ti, "FlipAngle": fa}
    out["UNIT1"] = {"MagneticFieldStrength": 3, "Units": "arbitrary"}
    for echo in range(1, 9):
        out[f"echo-{echo}_MESE"] = {"EchoTime": round(0.01 * echo, 3), "MagneticFieldStrength": 3}
    return out


def write_dataset(root: Path, subjects: int, sidecars: dict[str, dict]) -> int:
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
    for number, sub in enumerate(labels):
        for stem, sidecar in sidecars.items():
            provenance = sidecar.get("QmrbidsProvenance")
            if provenance is not None:   # what differs between subjects of a real study
                digest = hashlib.sha256(f"{sub}_{stem}".encode()).hexdigest()
                provenance = {**provenance, "NiftiSHA256": digest,
                              "SourceSeriesHMAC": hashlib.sha256(digest.encode()).hexdigest(),
                              "ConvertedAt": f"2026-01-{1 + number % 28:02d}T{number % 24:02d}:00:00Z"}
                sidecar = {**sidecar, "QmrbidsProvenance": provenance}
            put(f"{sub}/anat/{sub}_{stem}.nii.gz", None)
            put(f"{sub}/anat/{sub}_{stem}.json", json.dumps(sidecar, indent=2))
    return files


def _tree_pss_mb(pid: int) -> float:
    """Proportional set size (MB) of a process and its descendants; shared pages are split, not repeated."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup") as handle:
                total += next(int(line.split()[1]) for line in handle if line.startswith("Pss:"))
            with open(f"/proc/{current}/task/{current}/children") as handle:
                stack.extend(int(child) for child in handle.read().split())
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def _run(command: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + system, children included) and peak memory (MB) of a command.

    CPU time is reported because a shared machine stretches wall time. Peak memory is the largest
    summed PSS of the process tree seen in 20 ms samples (a forked worker's shared pages count once).
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_pss_mb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) not in (0, 1, 16):
        raise RuntimeError(f"{command[0]} failed with status {status}")
    return wall, usage.ru_utime + usage.ru_stime, max(peak[0], 0.0)


def _interleaved_medians(commands: dict[str, tuple[list[str], int]]) -> list[tuple[str, float, float, float]]:
    """(name, wall, cpu, peak) medians of each command run its number of times, the runs taken in turns.

    Turns put every command through the same spells of a shared machine's speed, so their ratio
    holds even when the machine's speed drifts during the benchmark.
    """
    runs: dict[str, list] = {name: [] for name in commands}
    for turn in range(max(count for _, count in commands.values())):
        for name, (command, count) in commands.items():
            if turn < count:
                runs[name].append(_run(command))
    return [(name, *(statistics.median(r[i] for r in results) for i in range(3))) for name, results in runs.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of qmrbids (median reported)")
    parser.add_argument("--official-repeats", type=int, default=1, help="runs of bids-validator-deno")
    parser.add_argument("--sidecars", choices=("real", "minimal"), default="real",
                        help="converted phantom sidecars (~45 keys) or only the fields the fits need")
    parser.add_argument("--jobs", type=int, default=0, help="qmrbids validate --jobs (0: every core)")
    args = parser.parse_args()
    official = shutil.which("bids-validator-deno")
    work = Path(tempfile.mkdtemp(prefix="qmrbids-validate-bench-"))
    try:
        dataset = work / "dataset"
        sidecars = real_sidecars(work) if args.sidecars == "real" else minimal_sidecars()
        files = write_dataset(dataset, args.subjects, sidecars)
        config = work / "config.json"
        atomic_write_text(config, json.dumps({"ignore": [{"code": "EMPTY_FILE"}]}))
        ours = [sys.executable, "-m", "qmrbids", "validate", str(dataset), "--config", str(config),
                "--ignore-nifti-headers", "--format", "json", "--jobs", str(args.jobs)]
        commands = {"qmrbids validate (qMRI rules)": ([*ours, "-o", str(work / "ours.json")], args.repeats),
                    "qmrbids validate --strict-official": (
                        [*ours, "-o", str(work / "strict.json"), "--strict-official"], args.repeats)}
        if official:
            schema = Path(bidsschematools.data.__file__).parent / "schema.json"
            commands["bids-validator-deno"] = (
                [official, str(dataset), "--ignoreNiftiHeaders", "--config", str(config), "--schema", schema.as_uri(),
                 "--json", "--max-rows", "-1"], args.official_repeats)
        rows = _interleaved_medians(commands)
        report = json.loads((work / "ours.json").read_text())
        print(f"dataset: {args.subjects} subjects, {files} files, {args.sidecars} sidecars; qmrbids found "
              f"{report['summary']['error']} errors, {report['summary']['warning']} warnings")
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
