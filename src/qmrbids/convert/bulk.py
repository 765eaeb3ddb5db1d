"""One dcm2niix pass over whole source folders, running while qmrbids reads the headers.

A fresh conversion otherwise costs the header scan plus dcm2niix; started first, dcm2niix's own
pass over the tree, and the compression of what it wrote, overlap the scan, and the outputs
(named by SeriesInstanceUID) are then picked up series by series. Anything the pass cannot give unambiguously (archive members, a
series spread over several source folders, a dcm2niix failure) is converted series by series as
before, so the bulk pass only ever saves time.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import dcm2niix

from qmrbids.convert.nifti import compress_clean
from qmrbids.convert.run import DCM2NIIX_OPTIONS, dcm2niix_outputs


class BulkConversion:
    """dcm2niix over each folder in ``folders`` (one after another, in a background thread)."""

    #: Seconds the pass may take before it is killed: this, plus 0.5 s per file once the scan has
    #: counted them (:meth:`allow`).
    BASE_TIMEOUT_S = 600.0

    def __init__(self, folders: list[Path], staging: Path):
        self._folders = folders
        self._staging = staging
        self._deadline = time.monotonic() + self.BASE_TIMEOUT_S
        self._process: subprocess.Popen | None = None
        self._stopped = False
        self._lock = threading.Lock()
        self._by_uid: dict[str, list[dict]] | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for index, folder in enumerate(self._folders):
            out = self._staging / f"bulk-{index}"
            out.mkdir()
            with self._lock:
                if self._stopped:
                    return
                self._process = subprocess.Popen(
                    [dcm2niix.bin, *DCM2NIIX_OPTIONS, "-f", "%j", "-o", str(out), str(folder)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not self._finished():  # a file may be half-written: use none of this folder's outputs
                shutil.rmtree(out, ignore_errors=True)
                continue
            for nifti in sorted(out.glob("*.nii")):  # compress while the scan goes on (ISA-L frees the GIL)
                if self._stopped:
                    return
                compress_clean(nifti)

    def _finished(self) -> bool:
        """True when dcm2niix exited by itself (not killed by a signal) before the deadline."""
        while True:
            try:
                return self._process.wait(timeout=max(0.0, min(1.0, self._deadline - time.monotonic()))) >= 0
            except subprocess.TimeoutExpired:
                if time.monotonic() >= self._deadline:
                    self._process.kill()
                    self._process.wait()
                    return False

    def allow(self, files: int) -> None:
        """Extend the time limit for a source of ``files`` files (known once the scan is done)."""
        self._deadline += 0.5 * files

    def outputs(self, uid: str) -> list[dict] | None:
        """dcm2niix's outputs for one series, or None when the pass did not give them unambiguously."""
        if self._by_uid is None:
            self._thread.join()
            found: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
            for index in range(len(self._folders)):
                folder = self._staging / f"bulk-{index}"
                for output in dcm2niix_outputs(folder) if folder.is_dir() else []:
                    found[output["name"].split("_", 1)[0]][index].append(output)
            self._by_uid = {u: next(iter(per_folder.values())) for u, per_folder in found.items()
                            if len(per_folder) == 1}
        return self._by_uid.get(uid)

    def stop(self) -> None:
        """Kill a pass still running (interrupt or error) and wait for it."""
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
        self._thread.join()
