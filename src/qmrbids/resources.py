"""Locate the project's data folders (schema/, converters/, validators/, examples/).

In an installed wheel they live inside the package under ``qmrbids/_data``; in a source checkout
(including an editable install) they are the folders at the repository root. Code asks for them
by name and never by absolute path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DATA_FOLDERS = ("schema", "converters", "validators", "examples")


def data_path(folder: str, *parts: str) -> Path:
    """Path of ``folder/parts...`` among the shipped data folders."""
    if folder not in DATA_FOLDERS:
        raise ValueError(f"unknown data folder {folder!r}; expected one of {DATA_FOLDERS}")
    installed = Path(str(resources.files("qmrbids"))) / "_data" / folder
    source_tree = Path(__file__).resolve().parents[2] / folder
    base = installed if installed.is_dir() else source_tree
    return base.joinpath(*parts)


def package_file(*parts: str) -> Path:
    """Path of a data file that lives next to the code, e.g. ``package_file("phantom", "vendors.yaml")``."""
    return Path(str(resources.files("qmrbids"))).joinpath(*parts)
