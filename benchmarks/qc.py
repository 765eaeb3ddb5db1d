"""Time ``qmrbids qc`` on a 100-session dataset of small phantoms.

The dataset: 100 sessions (50 subjects x 2 sessions, 4 sites), each a 32 x 32 x 2 phantom with the
VFA, IRT1, DAM B1 and MTS protocols (12 series), converted by qmrbids once and then copied per
session; one T1 map per session in derivatives/qmrbids. The reference measured in the same run is
the bare work every QC run has to do: reading every NIfTI header and sidecar once.

    python benchmarks/qc.py [--sessions 100] [--repeats 3] [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from qmrbids.convert import convert, load_config
from qmrbids.phantom import PhantomSettings, write_phantom
from qmrbids.qc import draft_protocol, load_protocol, protocol_yaml, run_qc, write_outputs

ROOT = Path(__file__).resolve().parents[1]


def build(folder: Path, sessions: int) -> tuple[Path, Path]:
    source = folder / "phantom"
    write_phantom(source, PhantomSettings(protocols=("vfa", "irt1", "tb1dam", "mts"), snr=50, matrix=32, slices=2))
    template = folder / "template"
    convert([source / "dicom"], template, load_config(ROOT / "examples" / "phantom-study.yaml"), subject="T", session="1")
    dataset = folder / "bids"
    dataset.mkdir()
    for name in ("dataset_description.json", "README.md", "CHANGES"):
        shutil.copy(template / name, dataset / name)
    t1 = nib.load(source / "truth" / "T1map.nii.gz")
    participants = ["participant_id\tsite"]
    for index in range(sessions):
        subject, session = f"S{index // 2:03d}", str(index % 2 + 1)
        if session == "1":
            participants.append(f"sub-{subject}\tsite{index // 2 % 4}")
        target = dataset / f"sub-{subject}" / f"ses-{session}"
        for path in (template / "sub-T" / "ses-1").rglob("*"):
            if path.is_file() and not path.name.endswith("_scans.tsv"):
                out = target / path.relative_to(template / "sub-T" / "ses-1")
                out = out.with_name(out.name.replace("sub-T_ses-1", f"sub-{subject}_ses-{session}"))
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, out)
        maps = dataset / "derivatives" / "qmrbids" / f"sub-{subject}" / f"ses-{session}" / "anat"
        maps.mkdir(parents=True, exist_ok=True)
        nib.save(t1, maps / f"sub-{subject}_ses-{session}_T1map.nii.gz")
        (maps / f"sub-{subject}_ses-{session}_T1map.json").write_text(json.dumps({"Units": "s"}))
    (dataset / "participants.tsv").write_text("\n".join(participants) + "\n")
    protocol = folder / "protocol.yaml"
    protocol.write_text(protocol_yaml(draft_protocol(template, "T", "1")))
    return dataset, protocol


def read_everything(dataset: Path) -> None:
    for path in dataset.rglob("*.nii.gz"):
        nib.load(path).header.get_data_shape()
    for path in dataset.rglob("*.json"):
        json.loads(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dataset, protocol_path = build(Path(tmp), args.sessions)
        print(f"built {args.sessions} sessions in {time.perf_counter() - start:.1f} s "
              f"({sum(1 for _ in dataset.rglob('*.nii.gz'))} NIfTI files)")
        protocol = load_protocol(protocol_path)
        rows = []
        steps = {
            "reference: read every header and sidecar": lambda: read_everything(dataset),
            "qc (compliance + metrics)": lambda: run_qc(dataset, protocol, jobs=args.jobs),
            "qc + HTML report": lambda: write_outputs(run_qc(dataset, protocol, jobs=args.jobs), Path(tmp) / "r", "html"),
            "qc + TSV": lambda: write_outputs(run_qc(dataset, protocol, jobs=args.jobs), Path(tmp) / "t", "tsv"),
        }
        for name, step in steps.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                step()
                times.append(time.perf_counter() - start)
            rows.append((name, statistics.median(times)))
        reference = rows[0][1]
        print(f"\n{'step':<45}{'median s':>10}{'x reference':>13}{'s/session':>11}")
        for name, seconds in rows:
            print(f"{name:<45}{seconds:>10.2f}{seconds / reference:>13.1f}{seconds / args.sessions:>11.3f}")
        result = run_qc(dataset, protocol, jobs=args.jobs)
        print(f"\ncheck: {result.counts()}")


if __name__ == "__main__":
    main()
