"""Writing files so that a crash never leaves a half-written file under the final name."""

import os
import secrets
from pathlib import Path


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
