"""Atomic writes of files and folders: an interrupted or failed write leaves no partial one."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path, suffix=".tmp"):
    """Yields a temporary path beside `path`; on success it is renamed to `path`, on any
    failure it is removed. `suffix` lets writers that check extensions (Keras: ".keras") work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data):
    """Writes `data` to `path` through a temporary file in the same folder, then renames it."""
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path):
    """Yields a temporary folder beside `path`; on success it replaces `path` (an existing
    folder is moved aside first and removed after), on any failure it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield temporary
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(temporary, path)
            shutil.rmtree(old)
        else:
            os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def refuse_overwrite(path, overwrite, flag="overwrite=True"):
    """Raises FileExistsError naming `path` when it exists and `overwrite` is false."""
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass {flag} to replace it")
