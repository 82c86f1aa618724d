"""Atomic writes: write to a temporary name in the same folder, then rename.

A crash or an error half-way leaves either the old file or nothing, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the usual mode
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir_files(folder: str | Path) -> Iterator[Path]:
    """Yields a temporary folder inside ``folder``; on success its files move into ``folder``.

    For formats that write several files referring to each other by name (``.mhd`` + ``.raw``):
    write them under their final names in the temporary folder, and they are moved over together
    (data files first, so a header never points at a missing file).
    """
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".medcad-", dir=target))
    try:
        yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        headers = [n for n in names if n.endswith((".mhd", ".hdr"))]
        for name in [n for n in names if n not in headers] + headers:
            os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_output_folder(path: str | Path, what: str) -> Path:
    """Fails now, with one line naming ``path``, when it cannot be (or become) a folder to write in.

    Nothing is created: a command checks its outputs before any work, and a bad one leaves nothing.
    ``what`` names the output in the message (e.g. ``"--report"``).
    """
    from medcad.errors import InputError

    target = Path(path)
    if target.exists() and not target.is_dir():
        raise InputError(target, f"{what} must be a folder, and this is a file")
    ancestor = target
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(target, f"{what}: {ancestor} is a file, so the folder cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(target, f"{what}: the folder {ancestor} is not writable")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Writes a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
