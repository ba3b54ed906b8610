"""Writing files so that a crash never leaves a half-written file under the final name, and into
folders that hold nothing else."""

import os
import secrets
from pathlib import Path

from .errors import InputError


def atomic_write(path, write):
    """Create or replace `path` atomically: write(f) fills a temporary file (opened "xb") in the
    same folder, which is flushed, fsynced and renamed over path (os.replace, atomic on POSIX);
    the folder is fsynced so the rename itself survives a crash. On any error the temporary file
    is removed and path is left as it was."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def atomic_write_bytes(path, data):
    """`atomic_write` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def files_in(folder, name):
    """The sorted names held by `folder`, none if it does not exist yet: what a writer checks
    before it writes into a folder, to write only into a new or empty one. An InputError naming
    the folder as `name` when it is a file or cannot be listed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{name} exists and is not a folder; give a new or empty folder")
    if not folder.is_dir():
        return []
    try:
        return sorted(p.name for p in folder.iterdir())
    except OSError as e:
        raise InputError(f"cannot list {name} ({e.strerror})") from None


def some(names):
    """The first three names, and how many more: "a, b, c and 4 more"."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
