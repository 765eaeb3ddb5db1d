"""One walk over a dataset: every file and folder with its size, ``.bidsignore`` applied.

The walk follows symlinks (datasets managed by git-annex/DataLad are symlink farms) but never
enters a folder twice on the same path (symlink loops), and turns everything it cannot read
(permission denied, broken links, undecodable names) into issues instead of exceptions.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from qmrbids.validate.issues import Issue

DEFAULT_IGNORES = (".git**", ".*", "sourcedata/", "code/", "stimuli/", "log/")


@dataclass(eq=False, slots=True)
class File:
    name: str
    path: str           # dataset-relative, with a leading "/" as in the official validator
    size: int           # bytes; -1 until FileReader.size reads it (a regular file's size is read when checked)
    parent: "Folder"
    ignored: bool = False
    viewed: bool = False


@dataclass(eq=False, slots=True)
class Folder:
    name: str
    path: str           # "/" for the root, "/sub-01/" style otherwise (trailing slash)
    parent: "Folder | None"
    files: dict[str, File] = field(default_factory=dict)
    folders: dict[str, "Folder"] = field(default_factory=dict)
    ignored: bool = False
    by_suffix: dict | None = None   # filled on first use by the inheritance lookup

    def walk_files(self):
        yield from self.files.values()
        for sub in self.folders.values():
            yield from sub.walk_files()

    def contains(self, parts: list[str]) -> bool:
        """True if the relative path given as parts exists (a file or a folder) below this folder."""
        node = self
        for i, part in enumerate(parts):
            if part in ("", "."):
                continue
            if i == len(parts) - 1 and part in node.files:
                return True
            nxt = node.folders.get(part)
            if nxt is None:
                return False
            node = nxt
        return True


class IgnoreRules:
    """gitignore-style patterns (the ``.bidsignore`` syntax) matched against dataset-relative paths."""

    def __init__(self, patterns: list[str]):
        self.rules: list[tuple[re.Pattern, bool, bool]] = []
        for raw in patterns:
            line = raw.rstrip("\r").rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = "/" in line          # a slash at the start or in the middle anchors at the root
            line = line.lstrip("/")
            self.rules.append((re.compile(self._regex(line, anchored)), negate, dir_only))
        # without "!" patterns a path is ignored if any pattern matches: one alternation per kind of path
        self.any_match = None if any(negate for _, negate, _ in self.rules) else {
            is_dir: re.compile("|".join(f"(?:{r.pattern})" for r, _, dir_only in self.rules
                                        if is_dir or not dir_only) or "(?!)")
            for is_dir in (False, True)}

    @staticmethod
    def _regex(glob: str, anchored: bool) -> str:
        out, i = [], 0
        while i < len(glob):
            c = glob[i]
            if glob.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
                continue
            if glob.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append({"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c)))
            i += 1
        body = "".join(out)
        return ("^" if anchored else "^(?:.*/)?") + body + "(?:/.*)?$"

    def ignores(self, rel: str, is_dir: bool) -> bool:
        """Last matching pattern wins; "dir/" patterns match folders (their files inherit it)."""
        if self.any_match is not None:
            return self.any_match[is_dir].match(rel) is not None
        result = False
        for regex, negate, dir_only in self.rules:
            if (is_dir or not dir_only) and regex.match(rel):
                result = not negate
        return result


@dataclass
class DatasetIndex:
    root: Path
    tree: Folder
    issues: list[Issue]
    file_count: int


def _read_bidsignore(root: Path, issues: list[Issue]) -> list[str]:
    path = root / ".bidsignore"
    try:
        return path.read_bytes().decode("utf-8", "replace").split("\n")
    except FileNotFoundError:
        return []
    except OSError as error:
        issues.append(Issue("FILE_READ", "error", "/.bidsignore", f"cannot read .bidsignore: {error.strerror}; "
                            "fix its permissions"))
        return []


def index_dataset(root: Path, extra_ignores: tuple[str, ...] = ()) -> DatasetIndex:
    """Walk ``root`` once. Raises ``NotADirectoryError``/``PermissionError`` only for the root itself."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    os.listdir(root)  # a root that cannot be listed is a usage error for the caller
    issues: list[Issue] = []
    rules = IgnoreRules([*DEFAULT_IGNORES, *_read_bidsignore(root, issues), *extra_ignores])
    tree = Folder("", "/", None)
    count = 0
    stack = [(tree, str(root), "", frozenset())]
    while stack:
        folder, abspath, rel, seen = stack.pop()
        try:
            st = os.stat(abspath)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                issues.append(Issue("SYMLINK_LOOP", "error", folder.path,
                                    "This folder is a symbolic link to one of its own parents; remove the link."))
                continue
            seen = seen | {key}
            entries = list(os.scandir(abspath))
        except OSError as error:
            issues.append(Issue("FILE_READ", "error", folder.path,
                                f"cannot list this folder ({error.strerror}); fix its permissions"))
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            name = entry.name
            if not name.isascii() and any("\udc80" <= ch <= "\udcff" for ch in name):
                shown = os.fsencode(name).decode("utf-8", "backslashreplace")
                issues.append(Issue("INVALID_FILENAME_ENCODING", "error", f"/{rel}/{shown}" if rel else "/" + shown,
                                    "File names must be valid UTF-8; rename this file."))
                continue
            child_rel = f"{rel}/{name}" if rel else name
            try:
                is_dir = entry.is_dir()
                size = -1   # a regular file, as the directory listing says: its size is read in the checks
                if not is_dir and (entry.is_symlink() or not entry.is_file()):
                    st = entry.stat()
                    if not stat.S_ISREG(st.st_mode):
                        issues.append(Issue("FILE_READ", "error", "/" + child_rel,
                                            "Not a regular file (device, socket or pipe); remove it."))
                        continue
                    size = st.st_size
            except FileNotFoundError:
                issues.append(Issue("ORPHANED_SYMLINK", "error", "/" + child_rel,
                                    "This symbolic link points to nothing; fix or remove it."))
                continue
            except OSError as error:
                issues.append(Issue("FILE_READ", "error", "/" + child_rel,
                                    f"cannot read ({error.strerror}); fix its permissions"))
                continue
            ignored = folder.ignored or rules.ignores(child_rel, is_dir)
            if is_dir:
                sub = Folder(name, f"/{child_rel}/", folder, ignored=ignored)
                folder.folders[name] = sub
                stack.append((sub, entry.path, child_rel, seen))
            else:
                folder.files[name] = File(name, "/" + child_rel, size, folder, ignored=ignored)
                count += 1
    return DatasetIndex(root, tree, issues, count)
