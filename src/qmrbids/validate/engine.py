"""Validate a dataset: index it once, apply the official rules, then the qMRI extension's rule packs."""

from __future__ import annotations

import fnmatch
import gc
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from qmrbids import __version__
from qmrbids.validate.citation import check_citation
from qmrbids.validate.context import DatasetContext, FileContext, FileReader, LoadError
from qmrbids.validate.index import Folder, index_dataset
from qmrbids.validate import qmri
from qmrbids.validate.issues import RANK, Issue, make
from qmrbids.validate.official import (apply_rules, check_filename, load_context, subfolder_contexts,
                                       unused_sidecars)
from qmrbids.validate.schema_rules import official_schema


class ValidationError(Exception):
    """The dataset cannot be validated at all (not a folder, unreadable root, unknown schema version)."""


@dataclass
class Options:
    strict_official: bool = False
    schema_version: str | None = None     # qMRI extension version; None: the dataset's own, else the newest
    recursive: bool = False
    ignore_codes: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)   # {"ignore"|"warning"|"error": [{"code": ..., "location": ...}]}
    read_nifti_headers: bool = True
    jobs: int = 0    # processes checking files; 0: every core, on datasets of PARALLEL_FROM files or more


#: Below this many files one process is quicker than starting another.
PARALLEL_FROM = 10_000


@dataclass
class Report:
    dataset: str
    issues: list[Issue]
    bids_version: str
    bids_schema_version: str
    qmri_schema_version: str | None
    files: int
    nested: list["Report"] = field(default_factory=list)
    tool_version: str = __version__

    def all_issues(self) -> list[Issue]:
        return [*self.issues, *(i for n in self.nested for i in n.issues)]

    def counts(self) -> dict[str, int]:
        levels = Counter(map(attrgetter("level"), self.all_issues()))
        return {level: levels[level] for level in ("error", "warning", "info")}

    def exit_code(self, fail_on: str = "error") -> int:
        threshold = RANK[fail_on]
        return 1 if any(n and RANK[level] >= threshold for level, n in self.counts().items()) else 0


def load_config(path: Path) -> dict:
    """A configuration file in the official validator's format (``{"ignore": [{"code": ...}], ...}``)."""
    try:
        config = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValidationError(f"{path}: cannot read the config ({error})") from None
    if not isinstance(config, dict) or any(
            not isinstance(config.get(k, []), list) for k in ("ignore", "warning", "error")):
        raise ValidationError(f"{path}: the config must be an object with lists under ignore/warning/error")
    return config


def _apply_config(issues: list[Issue], options: Options) -> list[Issue]:
    """``--ignore`` codes and the config's level overrides (last matching entry wins, as upstream)."""
    entries = [(level, rule) for level in ("ignore", "warning", "error") for rule in options.config.get(level, [])]
    by_code = {rule["code"]: level for level, rule in entries if set(rule) == {"code"}}
    general = [(level, rule) for level, rule in entries if set(rule) != {"code"}]
    out = []
    for issue in issues:
        level = by_code.get(issue.code, issue.level)
        for new_level, rule in general:
            if (("code" not in rule or rule["code"] == issue.code)
                    and ("location" not in rule or fnmatch.fnmatch(issue.path, rule["location"]))):
                level = new_level
        if level == "ignore" or issue.code in options.ignore_codes:
            continue
        out.append(issue if level == issue.level else issue._replace(level=level))
    return out


@contextmanager
def no_cycle_collection() -> Iterator[None]:
    """Pause Python's cycle collector while a dataset is validated or a report is written.

    Both allocate millions of long-lived objects (the index, parsed sidecars, contexts, issues,
    sort keys) and few reference cycles; the collector would walk all of them again and again
    (30 % of a run, half of writing a large report). At the end, what the pause allocated joins
    the oldest generation without being walked (freeze, then unfreeze): otherwise the first
    collection after it walks every survivor once more (0.1 s after 52,000 files). Cycles among
    them are still collected, by the next full collection. Also usable as a decorator.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:   # leave alone a permanent generation someone else froze
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


@no_cycle_collection()
def validate_dataset(path: Path, options: Options | None = None, _label: str = "") -> Report:
    """Validate the BIDS dataset at ``path`` (and, with ``recursive``, its derivative datasets)."""
    options = options or Options()
    prepared = official_schema()
    root = Path(path)
    try:
        index = index_dataset(root)
    except (NotADirectoryError, FileNotFoundError) as error:
        raise ValidationError(f"{root}: not a folder") from error
    except PermissionError as error:
        raise ValidationError(f"{root}: cannot be read ({error.strerror})") from error
    reader = FileReader(root)
    tree = index.tree
    issues: list[Issue] = list(index.issues)
    description: dict = {}
    description_file = tree.files.get("dataset_description.json")
    if description_file is None:
        issues.append(make("MISSING_DATASET_DESCRIPTION", "/dataset_description.json"))
    else:
        try:
            description = dict(reader.json(description_file))
        except LoadError as error:
            issues.append(make(error.code, description_file.path, error.detail))
    if not description.get("DatasetType"):
        description["DatasetType"] = "derivative" if description.get("GeneratedBy") else "raw"
    dataset_type = description["DatasetType"] if description["DatasetType"] in ("raw", "derivative", "study") else "raw"

    nested_roots: list[Folder] = []
    for name in ("sourcedata", "code"):
        tree.folders.pop(name, None)
    derivatives = tree.folders.pop("derivatives", None)
    if derivatives is not None:
        nested_roots = [d for d in derivatives.folders.values() if "dataset_description.json" in d.files]

    subjects: dict = {"sub_dirs": [n for n in tree.folders if n.startswith("sub-")]}
    participants = tree.files.get("participants.tsv")
    if participants is not None:
        try:
            subjects["participant_id"] = reader.tsv(participants).get("participant_id")
        except LoadError:
            pass
    ds = DatasetContext(tree=tree, reader=reader, schema=prepared.schema, description=description,
                        subjects=subjects, issues=issues)
    extension = None
    if not options.strict_official:
        extension = qmri.load_extension(options.schema_version or qmri.declared_version(description))
    check = _FileChecks(ds, prepared, extension, dataset_type, skip_derivatives=description["DatasetType"] == "raw",
                        options=options)
    in_folders: list[Issue] = []
    for found, at_root in _run_shards(check, *_shards(tree, options.jobs)):
        in_folders.extend(found)
        issues.extend(at_root)
    issues.extend(unused_sidecars(prepared, tree))
    issues.extend(check_citation(tree, reader, prepared.schema["objects"]["formats"]))

    qmri_version = None
    if extension is not None:
        qmri_version = extension.version
        issues.extend(qmri.apply_derivatives(extension, derivatives, root))

    # Shards come settled (configured, each issue once); only root-level paths, which any shard
    # may report (an inherited root sidecar), can repeat across shards and dataset-level checks.
    unique = [*dict.fromkeys(_apply_config(issues, options)), *in_folders]
    report = Report(_label, unique, prepared.bids_version,
                    prepared.schema_version, qmri_version, index.file_count)
    if options.recursive:
        for folder in nested_roots:
            label = f"{_label}/derivatives/{folder.name}".lstrip("/")
            nested = validate_dataset(root / "derivatives" / folder.name, options, label)
            nested.issues = [i._replace(dataset=label) for i in nested.issues]
            report.nested.extend([nested, *nested.nested])
            nested.nested = []
    return report


@dataclass
class _FileChecks:
    """The per-file rules (official, then the extension's) and the collection rules of a set of files."""

    ds: DatasetContext
    prepared: object
    extension: object
    dataset_type: str
    skip_derivatives: bool
    options: Options

    def contexts(self, shard: list[str]) -> Iterator[FileContext]:
        """The contexts of a shard's top-level entries ("" for the root's files), in dataset order."""
        ds, prepared, tree = self.ds, self.prepared, self.ds.tree
        for name in shard:
            found = (FileContext(f, ds) for f in tree.files.values()) if name == "" else \
                subfolder_contexts(ds, prepared, tree.folders[name])
            for ctx in found:
                if not ctx.file.ignored and not (self.skip_derivatives and "derivatives" in ctx.path):
                    yield ctx

    def __call__(self, shard: list[str]) -> tuple[list[Issue], list[Issue]]:
        """Issues of a shard's files, configured and each once: those inside its top-level folders,
        and those at root-level paths. Holds only the current folder's contents in memory."""
        inside, at_root = [], []
        for issue in dict.fromkeys(_apply_config(self._check(shard), self.options)):
            (at_root if issue.path.find("/", 1) == -1 else inside).append(issue)
        return inside, at_root

    def _check(self, shard: list[str]) -> list[Issue]:
        ds, prepared, extension = self.ds, self.prepared, self.extension
        start = len(ds.issues)
        collections: list[Issue] = []
        nifti: list[FileContext] = []   # the current folder's images, for the extension's collection rules
        folder = None
        for ctx in self.contexts(shard):
            if ctx.file.parent is not folder:   # a folder's files come together, before its subfolders
                folder = ctx.file.parent
                collections.extend(self._collections(nifti))
                nifti = []
                _forget_outside(ds, folder)
            if ctx.size == 0 and not ctx.directory:
                ds.issues.append(make("EMPTY_FILE", ctx.path))
            if not ctx.directory:  # contents load before the name is judged, as upstream does
                load_context(ctx, prepared, self.options.read_nifti_headers)
            check_filename(ctx, prepared, self.dataset_type)
            if ctx.directory:
                continue
            apply_rules(ctx, prepared)
            if extension is not None:
                ds.issues.extend(qmri.apply_file(extension, ctx))
            ctx.release()
            if extension is not None and ctx.extension in qmri.NIFTI and ctx.suffix:
                nifti.append(ctx)   # collection rules read only the name and the sidecar
            else:
                ctx.sidecar = {}
        collections.extend(self._collections(nifti))
        found = ds.issues[start:]
        del ds.issues[start:]
        return found + collections

    def _collections(self, nifti: list[FileContext]) -> list[Issue]:
        if self.extension is None or not nifti:
            return []
        found = qmri.apply_collections(self.extension, nifti)
        for ctx in nifti:
            ctx.sidecar = {}
        return found


def _forget_outside(ds: DatasetContext, folder: Folder) -> None:
    """Drop cached contents and validated sidecar keys of folders that are not ``folder`` or above it.

    Sidecars are inherited downwards only and folders are checked depth first, so nothing later
    reads them again; memory then follows the folder depth, not the dataset size.
    """
    keep = set()
    while folder is not None:
        keep.add(folder.path)
        folder = folder.parent
    reader = ds.reader
    for cache in (reader.json_cache, reader.tsv_cache, ds.validated_keys):
        for path in [p for p in cache if p[:p.rfind("/") + 1] not in keep]:
            del cache[path]


def _shards(tree: Folder, jobs: int) -> tuple[int, list[list[str]]]:
    """(processes, shards): the dataset's top-level entries ("" for the root's files) cut into runs
    of similar file counts, in dataset order; one shard when one process checks everything.

    Collections and inherited sidecars below the root then never span two shards, and issues
    come out in the same order whatever the number of shards. There are several shards per
    process: a process that finishes early takes the next, so uneven folders, or a core slowed
    by other work, do not leave the other processes waiting.
    """
    sizes = [("", len(tree.files))] + [(name, sum(1 for _ in sub.walk_files()) + 1)
                                       for name, sub in tree.folders.items()]
    total = sum(size for _, size in sizes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    processes = jobs or (cores if total >= PARALLEL_FROM else 1)
    if processes < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return 1, [[name for name, _ in sizes]]
    shards: list[list[str]] = [[]]
    filled, target = 0, -(-total // (processes * SHARDS_PER_PROCESS))
    for name, size in sizes:
        if filled >= target:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += size
    return processes, shards


#: Shards per process (see :func:`_shards`).
SHARDS_PER_PROCESS = 8
_WORK: tuple | None = None   # (checks, shards) inherited by forked workers


def _run_shards(check: _FileChecks, processes: int, shards: list[list[str]]) -> list[tuple[list[Issue], list[Issue]]]:
    """Each shard's settled issues (see :meth:`_FileChecks.__call__`), in shard order, checked by
    this process and forked ones together.

    Every shard is queued for ``processes - 1`` forked workers, which take them from the front;
    this process takes them from the back (cancelling the queued task) until the two meet.
    Workers inherit the dataset index and compiled rules by fork; they send back a shard's issues
    and which of its sidecars (or the root's) they read, for SIDECAR_WITHOUT_DATAFILE.
    """
    global _WORK
    if processes == 1:
        return [check(shard) for shard in shards]
    _WORK = (check, shards)
    results: list[tuple[list[Issue], list[Issue]]] = []
    viewed: set[str] = set()
    try:
        with ProcessPoolExecutor(processes - 1, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(_check_shard, n) for n in range(len(shards))]
            here = {}
            for n in reversed(range(len(shards))):
                if not futures[n].cancel():   # a worker has it already, and every shard before it
                    break
                here[n] = check(shards[n])
            for n, future in enumerate(futures):
                if n in here:
                    results.append(here[n])
                    continue
                inside, at_root, seen = future.result()
                results.append(([Issue._make(i) for i in inside], [Issue._make(i) for i in at_root]))
                viewed.update(seen)
    finally:
        _WORK = None
    for file in check.ds.tree.walk_files():
        if file.path in viewed:
            file.viewed = True
    return results


def _check_shard(number: int) -> tuple[list[tuple], list[tuple], list[str]]:
    check, shards = _WORK
    tree = check.ds.tree
    inside, at_root = check(shards[number])
    files = [*tree.files.values(), *(f for name in shards[number] if name for f in tree.folders[name].walk_files())]
    return [tuple(i) for i in inside], [tuple(i) for i in at_root], [f.path for f in files if f.viewed]
