"""Atomic writes: every file and output directory prodmatch writes appears whole or not at all.

A file is written beside its target and renamed over it (atomic on POSIX); a directory is staged beside its
target and renamed into place when the step that writes it completes (:func:`staged_output`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from prodmatch.errors import ConfigError

__all__ = ["ROW_GROUP_SIZE", "atomic_path", "staged_output", "write_json", "write_parquet"]

ROW_GROUP_SIZE = 32_768


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error remove it.

    The rename is atomic on POSIX, so readers see the old file or the complete new one, never a part.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def staged_output(out_dir: str | Path, overwrite: bool, marker: str):
    """A context manager yielding a temporary directory beside ``out_dir`` that replaces it on success only.

    The one rule every step writing a directory follows (train's run directory aside, which resumes in place):
    a non-empty ``out_dir`` is replaced only with ``overwrite``, and only if prodmatch wrote it (``marker``, the
    file such a step writes last, is there). The check runs now, before any work; a crash removes the staging.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file, not a directory; choose another --out (a directory to create)")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out_dir} is not empty; pass --overwrite to replace it or choose another --out")
        if not (out_dir / marker).exists():
            raise ConfigError(f"{out_dir} holds files that prodmatch did not write; refusing to delete them")

    @contextlib.contextmanager
    def staged() -> Iterator[Path]:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", dir=out_dir.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the folder the usual mode
        try:
            yield tmp
            if out_dir.exists():
                shutil.rmtree(out_dir)
            tmp.rename(out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    return staged()


def _remove_abandoned(out_dir: Path) -> None:
    """Remove the staging folders of ``out_dir`` that a killed process left (``kill -9``, a lost machine): each is
    named after the process that made it, and one whose process no longer runs is abandoned."""
    for stale in out_dir.parent.glob(f".{out_dir.name}.*.*"):
        pid = stale.name[len(out_dir.name) + 2 :].split(".", 1)[0]
        if stale.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def write_json(obj: object, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")
    return Path(path)


def write_parquet(table: pa.Table | pd.DataFrame, path: str | Path) -> Path:
    """Write a table to parquet, atomically."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(path) as tmp:
        # Modest row groups let readers decode list columns in parallel and in cache-sized pieces.
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE)
    return Path(path)


def plain(x: object) -> object:
    """A numpy scalar as the Python int, float, str or bool it holds (anything else unchanged), for JSON."""
    return x.item() if isinstance(x, np.generic) else x


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
