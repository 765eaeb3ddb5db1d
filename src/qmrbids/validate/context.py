"""Per-file evaluation context: what the schema's expressions may read about one file.

File contents are read once and shared: JSON sidecars through a per-run cache (inheritance
means a root sidecar is merged into thousands of contexts), TSV tables likewise.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from qmrbids.validate.expressions import truthy
from qmrbids.validate.index import File, Folder
from qmrbids.validate.issues import Issue, make

_ENTITY = re.compile(r"-(.+)", re.S)


@lru_cache(maxsize=1024)   # a folder's names recur (contexts, inheritance); across folders they differ
def read_entities(name: str) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
    """(stem, suffix, extension, entities) of a file name, exactly as the official validator splits it."""
    dot = name.find(".")
    stem, extension = (name, "") if dot == -1 else (name[:dot], name[dot:])
    parts = stem.split("_")
    suffix = ""
    if len(parts) > 1 or re.fullmatch(r"[a-zA-Z0-9]+", parts[-1]):
        suffix = parts.pop()
    entities = []
    for part in parts:
        m = _ENTITY.search(part)
        if m:
            entities.append((part[:m.start()], m.group(1)))
        else:
            entities.append((part, "NOENTITY"))
    return stem, suffix, extension, tuple(dict(entities).items())


class LoadError(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(code)
        self.code = code
        self.detail = detail


class FileReader:
    """Reads and caches JSON and TSV content of the dataset's files; failures become issue codes."""

    def __init__(self, root: Path):
        self.root = root
        self._root_text = os.fspath(root)
        self.json_cache: dict[str, Any] = {}
        self.tsv_cache: dict[str, Any] = {}

    def abspath(self, file: File) -> Path:
        return self.root / file.path[1:]

    def size(self, file: File) -> int:
        """The file's size in bytes, read once (the index leaves regular files' sizes to the checks,
        which run in parallel); 0 if the file vanished since it was indexed."""
        if file.size < 0:
            try:
                file.size = os.stat(self._root_text + file.path).st_size
            except OSError:
                file.size = 0
        return file.size

    def read(self, file: File, limit: int = -1) -> bytes:
        """The file's bytes, or its first ``limit``.

        Read with one system call sized by the index (a file object and its growing buffer cost
        twice the read of a sidecar), then to the end if the file grew since it was indexed.
        """
        size = self.size(file)
        fd = os.open(self._root_text + file.path, os.O_RDONLY)
        try:
            data = os.read(fd, limit if limit >= 0 else size + 1)
            if limit < 0 and len(data) > size:
                with open(fd, "rb", closefd=False) as rest:
                    data += rest.read()
            return data
        finally:
            os.close(fd)

    def json(self, file: File) -> dict:
        hit = self.json_cache.get(file.path)
        if hit is None:
            try:
                hit = _parse_json(self.read(file))
            except LoadError as error:
                hit = error
            except OSError as error:
                hit = LoadError("FILE_READ", error.strerror or str(error))
            self.json_cache[file.path] = hit
        if isinstance(hit, LoadError):
            raise hit
        return hit

    def tsv(self, file: File) -> dict[str, list[str]]:
        hit = self.tsv_cache.get(file.path)
        if hit is None:
            try:
                data = self.read(file)
                if file.name.endswith(".gz"):
                    data = gzip.decompress(data)
                hit = parse_tsv(data)
            except LoadError as error:
                hit = error
            except (OSError, EOFError) as error:
                hit = LoadError("FILE_READ", str(error))
            self.tsv_cache[file.path] = hit
        if isinstance(hit, LoadError):
            raise hit
        return hit


def _parse_json(data: bytes) -> dict:
    """A JSON object; orjson parses a 45-key sidecar 4x faster than the standard library, which
    still decides every document orjson refuses (invalid UTF-8, NaN, lone surrogates, ...)."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise LoadError("INVALID_JSON_ENCODING")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        value = _parse_json_text(data)
    if not isinstance(value, dict):
        raise LoadError("JSON_NOT_AN_OBJECT")
    return value


def _parse_json_text(data: bytes):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LoadError("INVALID_JSON_ENCODING") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise LoadError("JSON_INVALID") from None


def parse_tsv(data: bytes) -> dict[str, list[str]]:
    """Columns of a TSV file (all rows); raises LoadError with the official validator's codes."""
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    headers = lines[0].split("\t") if lines else []
    if len(set(headers)) != len(headers):
        raise LoadError("TSV_COLUMN_HEADER_DUPLICATE", ", ".join(headers))
    columns: list[list[str]] = [[] for _ in headers]
    width = len(headers)
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            raise LoadError("TSV_EMPTY_LINE", f"line {number}")
        values = line.split("\t")
        if len(values) != width:
            raise LoadError("TSV_EQUAL_ROWS", f"line {number}")
        for column, value in zip(columns, values):
            column.append(value)
    return dict(zip(headers, columns))


@dataclass
class DatasetContext:
    """``dataset`` and friends in the schema's expressions, shared by every file of one dataset."""

    tree: Folder
    reader: FileReader
    schema: dict
    description: dict
    subjects: dict
    issues: list[Issue] = field(default_factory=list)
    validated_keys: dict = field(default_factory=dict)   # sidecar path -> names validated there
    rule_cache: dict = field(default_factory=dict)   # (rule set, kind of file) -> selection plan
    association_cache: dict = field(default_factory=dict)
    subject_cache: dict = field(default_factory=dict)
    _value: dict | None = None

    def value(self) -> dict:
        """The ``dataset`` object of the expressions (one per dataset)."""
        if self._value is None:
            self._value = {"dataset_description": self.description, "tree": {}, "ignored": [], "datatypes": [],
                           "modalities": [], "subjects": self.subjects}
        return self._value


class FileContext:
    """The ``context`` of one file; attributes are what the expressions name."""

    __slots__ = ("file", "ds", "path", "size", "entities", "datatype", "suffix", "extension", "modality",
                 "sidecar", "sidecar_origin", "associations", "columns", "json", "nifti_header", "gzip", "subject",
                 "directory")

    def __init__(self, file: File, ds: DatasetContext, directory: bool = False):
        self.file = file
        self.ds = ds
        self.path = file.path
        self.size = file.size if file.size >= 0 else ds.reader.size(file)
        _, self.suffix, self.extension, ents = read_entities(file.name)
        self.entities = dict(ents)
        self.datatype = ""
        self.modality = ""
        self.sidecar: dict = {}
        self.sidecar_origin: dict | str = {}   # key -> sidecar path, or one path for every key
        self.associations: dict = {}
        self.columns: dict = {}
        self.json: dict = {}
        self.nifti_header = None
        self.gzip = None
        self.subject = None
        self.directory = directory

    def release(self) -> None:
        """Drop what only the per-file rules needed, for contexts kept until the collection rules."""
        self.sidecar_origin = self.associations = self.columns = self.json = {}
        self.nifti_header = self.gzip = self.subject = None

    def origin_of(self, key: str) -> str:
        """The path of the sidecar this file's ``key`` was inherited from ("" if none gave it)."""
        origin = self.sidecar_origin
        return origin if isinstance(origin, str) else origin.get(key, "")

    def lookup(self, name: str):
        getter = _GETTERS.get(name)
        return getter(self) if getter is not None else None

    def exists(self, paths, rule: str = "dataset") -> int:
        if paths is None:
            return 0
        if not isinstance(paths, list):
            paths = [paths]
        if rule == "bids-uri":
            return sum(1 for p in paths if isinstance(p, str) and p.startswith("bids:"))
        tree = self.file.parent if rule == "file" else self.ds.tree
        prefix = ["stimuli"] if rule == "stimuli" else ([f"sub-{self.entities.get('sub')}"] if rule == "subject" else [])
        return sum(1 for p in paths if isinstance(p, str) and tree.contains(prefix + p.split("/")))


NOT_FIXED = object()


def fixed_value(name: str, extension: str):
    """The value ``name`` holds in the context of every file with this extension, else NOT_FIXED.

    As :func:`qmrbids.validate.official.load_context` fills contexts: JSON content only for .json
    files, table columns only for .tsv, inherited sidecars for all but .json, gzip headers only
    for .gz, NIfTI headers only for .nii and .nii.gz. Selectors reading only these are then
    decided once per kind of file.
    """
    if name == "json" and extension != ".json":
        return {}
    if name == "columns" and extension != ".tsv":
        return {}
    if name == "sidecar" and extension == ".json":
        return {}
    if name == "gzip" and not extension.endswith(".gz"):
        return None
    if name == "nifti_header" and not extension.startswith(".nii"):
        return None
    return NOT_FIXED


_GETTERS = {name: (lambda ctx, n=name: getattr(ctx, n)) for name in (
    "path", "size", "entities", "datatype", "suffix", "extension", "modality", "sidecar", "associations",
    "columns", "json", "nifti_header", "gzip", "subject")}
_GETTERS["dataset"] = lambda ctx: ctx.ds.value()
_GETTERS["schema"] = lambda ctx: ctx.ds.schema


def _folder_index(folder: Folder) -> dict:
    """A folder's files grouped by suffix, with their extension and entities (built once)."""
    index = folder.by_suffix
    if index is None:
        index = folder.by_suffix = {}
        for other in folder.files.values():
            _, suffix, ext, ents = read_entities(other.name)
            index.setdefault(suffix, []).append((other, ext, ents))
    return index


def walk_back(file: File, inherit: bool, extensions: tuple[str, ...], suffix: str | None,
              mark_viewed: bool = True):
    """Files that apply to ``file`` by the inheritance principle, nearest first."""
    _, source_suffix, _, source_entities = read_entities(file.name)
    source = None
    target_suffix = suffix or source_suffix
    folder = file.parent
    while folder is not None:
        group = _folder_index(folder).get(target_suffix)
        if source is None and group:
            source = dict(source_entities)
        candidates = [(other, oents) for other, oext, oents in group
                      if oext in extensions and all(source.get(k) == v for k, v in oents)] if group else ()
        if len(candidates) > 1:
            exact = [c for c, oents in candidates if all(dict(oents).get(k) == v for k, v in source.items())]
            if exact:
                candidates = [(exact[0], ())]
            else:
                paths = sorted(c.path for c, _ in candidates)
                raise LoadError("MULTIPLE_INHERITABLE_FILES", f"{paths[0]}: candidate files {paths}")
        if candidates:
            if mark_viewed:
                candidates[0][0].viewed = True
            yield candidates[0][0]
        if not inherit:
            break
        folder = folder.parent


def load_sidecar(ctx: FileContext) -> None:
    if ctx.extension == ".json":
        return
    try:
        found = list(walk_back(ctx.file, True, (".json",), None))
    except LoadError as error:
        ctx.ds.issues.append(make(error.code, error.detail.split(":")[0], error.detail, key=ctx.path))
        found = []
    contents = []
    for sidecar in found:
        try:
            contents.append((sidecar.path, ctx.ds.reader.json(sidecar)))
        except LoadError as error:
            ctx.ds.issues.append(make(error.code, sidecar.path, error.detail))
    if len(contents) == 1:  # the common case: share the parsed file, no copy
        merged, origin = contents[0][1], contents[0][0]
    else:
        merged, origin = {}, {}
        for path, content in contents:
            for key, value in content.items():
                if key not in merged:
                    merged[key] = value
                    origin[key] = path
    tr = merged.get("RepetitionTime")
    if isinstance(tr, (int, float)) and not isinstance(tr, bool) and round(tr * 1000) / 1000 != tr:
        merged = {**merged, "RepetitionTime": round(tr * 1000) / 1000}   # as upstream: TR to 1 ms
    ctx.sidecar = merged
    ctx.sidecar_origin = origin


def load_associations(ctx: FileContext, prepared) -> None:
    reader = ctx.ds.reader
    kind = (ctx.suffix, ctx.extension, ctx.datatype, tuple(ctx.entities), ctx.entities.get("atlas"))
    selected = ctx.ds.association_cache.get(kind)
    if selected is None:  # association selectors read only the file's kind (checked in schema_rules)
        selected = ctx.ds.association_cache[kind] = [
            a for a in prepared.associations if all(truthy(s(ctx)) for s in a[1])]
    for name, _, target, inherit in selected:
        try:
            found = next(walk_back(ctx.file, inherit, tuple(target["extensions"]), target["suffix"]), None)
        except LoadError as error:
            ctx.ds.issues.append(make(error.code, error.detail.split(":")[0], error.detail))
            break
        if found is None:
            continue
        value: dict = {"path": found.path}
        try:
            if name in ("events", "aslcontext", "channels"):
                columns = reader.tsv(found)
                if name == "events":
                    value["onset"] = columns.get("onset", [])
                elif name == "aslcontext":
                    value["volume_type"] = columns.get("volume_type", [])
                    value["n_rows"] = len(value["volume_type"])
                else:
                    for col in ("type", "short_channel", "sampling_frequency"):
                        value[col] = columns.get(col)
            elif name in ("bval", "bvec"):
                rows = [r.split() for r in reader.read(found).decode("utf-8", "replace").strip().split("\n")]
                rows = [r for r in rows if r] or [[]]
                value.update(n_cols=len(rows[0]), n_rows=len(rows))
                if name == "bval":
                    value["values"] = rows[0]
        except (LoadError, OSError):
            pass
        ctx.associations[name] = value


def load_gzip_header(ctx: FileContext) -> None:
    """``gzip`` of the expressions: the timestamp, file name and comment in a .gz file's header
    (RFC 1952; the standard library reads but does not expose the name and comment)."""
    if not ctx.extension.endswith(".gz") or ctx.size == 0:
        return
    for limit in (1024, GZIP_HEADER_BYTES):   # the usual header first; a long name or comment needs more
        try:
            head = ctx.ds.reader.read(ctx.file, limit)
        except OSError:
            return
        ctx.gzip = _gzip_header(head)
        if ctx.gzip is not None or len(head) < limit:
            return


def _gzip_header(head: bytes) -> dict | None:
    """The header fields, or None if ``head`` is no gzip header or ends inside one."""
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
        return None
    flags = head[3]
    header: dict = {"timestamp": int.from_bytes(head[4:8], "little")}
    at = 10
    if flags & 4:   # FEXTRA
        at += 2 + int.from_bytes(head[at:at + 2], "little")
    for bit, name in ((8, "filename"), (16, "comment")):   # FNAME, FCOMMENT: zero-terminated latin-1
        if flags & bit:
            end = head.find(b"\0", at)
            if end == -1:
                return None
            header[name] = head[at:end].decode("latin-1")
            at = end + 1
    return header


GZIP_HEADER_BYTES = 65536   # name and comment fields longer than this are not read


def load_nifti_header(ctx: FileContext) -> None:
    """Header fields the schema's NIfTI checks read; only the header bytes are read (nibabel)."""
    if not ctx.extension.startswith(".nii") or ctx.size == 0:
        return
    import nibabel as nib

    try:
        path = ctx.ds.reader.abspath(ctx.file)
        opener = gzip.open if ctx.extension.endswith(".gz") else open
        with opener(path, "rb") as handle:
            raw = handle.read(540)
        klass = nib.Nifti2Header if len(raw) >= 4 and int.from_bytes(raw[:4], "little") in (540, 540 << 24) \
            else nib.Nifti1Header
        header = klass.from_fileobj(io.BytesIO(raw))
        dim = [int(x) for x in header["dim"]]
        pixdim = [float(x) for x in header["pixdim"]]
        xyz, t = header.get_xyzt_units()
        freq, phase, slc = header.get_dim_info()
        ndim = dim[0] if 0 < dim[0] <= 7 else 0
        import nibabel.orientations as ornt

        try:
            axis_codes = list(ornt.aff2axcodes(header.get_best_affine()))
        except Exception:  # degenerate affines have no orientation
            axis_codes = []
        ctx.nifti_header = {
            "dim_info": {"freq": (freq or -1) + 1, "phase": (phase or -1) + 1, "slice": (slc or -1) + 1},
            "dim": dim, "pixdim": pixdim, "shape": dim[1:ndim + 1], "voxel_sizes": pixdim[1:ndim + 1],
            "xyzt_units": {"xyz": {"mm": "mm", "meter": "meter", "micron": "um"}.get(xyz, "unknown"),
                           "t": {"sec": "sec", "msec": "msec", "usec": "usec"}.get(t, "unknown")},
            "qform_code": int(header["qform_code"]), "sform_code": int(header["sform_code"]),
            "axis_codes": axis_codes,
        }
    except Exception as error:  # any malformed header (nibabel raises many kinds) is one issue
        ctx.ds.issues.append(make("NIFTI_HEADER_UNREADABLE", ctx.path, f"({error.__class__.__name__})"))

