"""Atomic file writes: an interrupted or failed write never leaves a partial file."""

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data):
    """Writes `data` to `path` through a temporary file in the same folder, then renames it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
