"""The one strict reader of .npz files: case files, answer files, checkpoints and data sets.

Every .npz revlearn reads comes from outside (another implementation, a user's data, a checkpoint
that a crash or a disk may have damaged), so nothing in it is trusted:

- the zip directory is checked first: only .npy members, each named once, stored or deflated
  (what np.savez and np.savez_compressed write), lying inside the file, and together expanding to
  no more than a limit (this machine's memory by default): a zip bomb is refused unread;
- each member's .npy header is parsed here (a dict literal of at most 10,000 bytes, as NumPy
  allows) and its declared shape and dtype checked against the bytes the member holds before any
  array is allocated; object (pickled) arrays are refused and never unpickled;
- each member is read to its end, so zip's CRC-32 checks every byte.

Whatever goes wrong becomes an `InputError` naming the file and saying, in revlearn's words, what
is wrong with it.
"""

import ast
import errno
import lzma
import math
import struct
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from . import memory
from .errors import InputError
from .memory import describe_bytes

NPY_MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000          # NumPy's own limit on an .npy header (np.load max_header_size)
FALLBACK_LIMIT = 16 << 30          # when this machine's memory cannot be asked
KINDS = "biufcUS"                  # booleans, numbers and strings; never objects
MAX_RATIO = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}  # deflate expands at most 1032:1
HEADER_SLACK = 64 << 10            # an .npy header and deflate's block overhead, in bytes
DAMAGE = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
          ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError, struct.error,
          NotImplementedError, RuntimeError, OverflowError, SyntaxError, MemoryError)


def read_npz(path, what, max_bytes=None):
    """Every array of the .npz file at `path`, as a dict key -> array (native byte order, owned).

    what: how messages name the file ("case file", "dataset", ...). max_bytes: refuse a file whose
    arrays together would take more (default: this machine's memory).
    """
    return _read(path, what, max_bytes, load=True)


def inspect_npz(path, what, max_bytes=None):
    """The declared (shape, dtype) of every array of an .npz file, reading only the headers (the
    same checks as `read_npz` on the directory and the headers)."""
    return _read(path, what, max_bytes, load=False)


def default_limit():
    """How many bytes the arrays of one file may take: this machine's memory."""
    return memory.physical_memory() or FALLBACK_LIMIT


def _read(path, what, max_bytes, load):
    path = Path(path)
    size = _check_file(path, what)
    key = None
    try:
        with zipfile.ZipFile(path) as zf:
            members = _members(zf, size, path, what, max_bytes)
            out = {}
            for key, info in members:
                out[key] = _read_member(zf, info, key, path, what, load)
            return out
    except InputError:
        raise
    except DAMAGE as e:
        raise InputError(f"{what} {path} is damaged or truncated: {_reason(e, key)}") from None


def _check_file(path, what):
    """The file's size, after refusing a missing file, a folder, and anything not a zip archive."""
    try:
        if path.is_dir():
            raise InputError(f"{what} {path} is a folder; give an .npz file")
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except OSError as e:
        raise InputError(f"cannot read {what} {path} ({e.strerror or type(e).__name__})") from None
    if not head.startswith(b"PK"):
        raise InputError(f"{what} {path} {_not_a_zip(head)}")
    return size


def _not_a_zip(head):
    if not head:
        return "is empty (0 bytes); an .npz file is what np.savez writes"
    if head.startswith(NPY_MAGIC):
        return ("is a single .npy array (np.save); an .npz file holds named arrays "
                "(np.savez(path, name=array, ...))")
    if head.startswith(b"\x1f\x8b"):
        return "is gzip-compressed; an .npz file is a zip archive, as np.savez writes it"
    if _looks_like_text(head):
        return "is a text file, not an .npz file (a zip archive of arrays, as np.savez writes it)"
    return "is not an .npz file: it does not start like a zip archive, as np.savez writes it"


def _looks_like_text(head):
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start >= len(head) - 3  # only a multi-byte character cut off at the end
    return True


def _members(zf, size, path, what, max_bytes):
    """[(key, ZipInfo)] after checking the zip directory, before any member is read."""
    infos = zf.infolist()
    declared = _declared_entries(path, size)
    if declared is not None and declared != len(infos):
        raise InputError(f"{what} {path} is damaged: its zip directory announces {declared} "
                         f"arrays but lists {len(infos)}")
    twice = sorted(n for n, k in Counter(i.filename for i in infos).items() if k > 1)
    if twice:
        raise InputError(f"{what} {path} holds {twice[0]!r} twice; it is damaged or was not "
                         "written by np.savez")
    members, total = [], 0
    for info in infos:
        key = info.filename[:-4]
        if not info.filename.endswith(".npy") or not key:
            raise InputError(f"{what} {path} holds {info.filename!r}, which is not an .npy array; "
                             "an .npz file holds only arrays (np.savez)")
        _check_member(info, key, size, path, what)
        members.append((key, info))
        total += info.file_size
    limit = default_limit() if max_bytes is None else max_bytes
    if total > limit:
        bound = "this machine's memory" if max_bytes is None else "the limit"
        raise InputError(f"{what} {path} would expand to {describe_bytes(total)}, more than "
                         f"{bound} ({describe_bytes(limit)}); revlearn refuses it unread")
    return members


def _declared_entries(path, size):
    """The number of entries the zip end record announces (zipfile reads the directory by its
    size and ignores this count, so an entry swallowed by a damaged length field would vanish
    silently); None for a zip64 count, which zipfile checks itself."""
    end = struct.Struct("<4s4H2LH")  # the end-of-central-directory record, 22 bytes
    with open(path, "rb") as f:
        f.seek(max(0, size - end.size - 0xFFFF))
        tail = f.read()
    at = len(tail) - end.size
    if tail[at:at + 4] != b"PK\x05\x06":  # not at the very end: the record has a comment
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + end.size > len(tail):
        return None  # zipfile has already accepted the file; let it be the judge
    entries = end.unpack_from(tail, at)[4]
    return None if entries == 0xFFFF else entries


def _check_member(info, key, size, path, what):
    if info.flag_bits & 0x1:
        raise InputError(f"{what} {path}: {key} is encrypted; revlearn reads plain .npz files")
    if info.compress_type not in MAX_RATIO:
        raise InputError(f"{what} {path}: {key} uses zip compression method "
                         f"{info.compress_type}; revlearn reads the stored and deflate methods "
                         "that np.savez and np.savez_compressed write")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise InputError(f"{what} {path} is damaged: {key} is stored uncompressed but declares "
                         f"{info.file_size} bytes in {info.compress_size}")
    if info.header_offset + info.compress_size > size:
        raise InputError(f"{what} {path} is damaged or truncated: {key} reaches past the end of "
                         f"the file ({size} bytes)")
    if info.file_size > MAX_RATIO[info.compress_type] * info.compress_size + HEADER_SLACK:
        raise InputError(f"{what} {path}: {key} declares {describe_bytes(info.file_size)} from "
                         f"{describe_bytes(info.compress_size)} of compressed data, more than its "
                         "compression can hold (a damaged file or a zip bomb); refused unread")


def _read_member(zf, info, key, path, what, load):
    """One member's array (or its (shape, dtype) when not load), header checked before reading."""
    with zf.open(info) as f:
        shape, dtype, fortran, header_len = _npy_header(f, key, path, what)
        nbytes = math.prod(shape) * dtype.itemsize
        if header_len + nbytes != info.file_size:
            raise InputError(f"{what} {path} is damaged: {key} declares shape {shape} of {dtype} "
                             f"({describe_bytes(nbytes)}) but holds "
                             f"{describe_bytes(max(info.file_size - header_len, 0))}")
        if not load:
            return shape, dtype
        data = f.read(nbytes)  # to the member's end: zip checks its CRC-32
        if len(data) != nbytes or f.read(1):
            raise EOFError
    a = np.frombuffer(data, dtype=dtype, count=math.prod(shape))
    a = a.reshape(shape, order="F" if fortran else "C")
    return np.array(a, dtype=dtype.newbyteorder("="), order="K")


def _npy_header(f, key, path, what):
    """(shape, dtype, fortran_order, header length in bytes) of the .npy member open in f."""
    def damaged(why):
        return InputError(f"{what} {path} is damaged: {key} {why}")

    magic = f.read(8)
    if len(magic) != 8 or not magic.startswith(NPY_MAGIC) or magic[6] not in (1, 2, 3):
        raise damaged("is not an .npy array (its header does not start like one)")
    width = 2 if magic[6] == 1 else 4
    raw = f.read(width)
    if len(raw) != width:
        raise damaged("ends inside its header")
    length = int.from_bytes(raw, "little")
    if length > MAX_HEADER_BYTES:
        raise damaged(f"has a header of {length} bytes; .npy headers are at most "
                      f"{MAX_HEADER_BYTES}")
    text = f.read(length)
    if len(text) != length:
        raise damaged("ends inside its header")
    try:
        header = ast.literal_eval(text.decode("utf-8" if magic[6] == 3 else "latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError, UnicodeDecodeError):
        raise damaged("has a header that is not an .npy header") from None
    shape, dtype, fortran = _header_fields(header, damaged)
    if dtype.hasobject:
        raise InputError(f"{what} {path}: {key} is an object array, stored pickled; revlearn never "
                         "unpickles a file (pickle can run code): save numbers and strings only")
    if dtype.kind not in KINDS or dtype.itemsize == 0:
        raise InputError(f"{what} {path}: {key} has dtype {dtype}; revlearn reads booleans, "
                         "numbers and strings")
    return shape, dtype, fortran, 8 + width + length


def _header_fields(header, damaged):
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise damaged("has a header without exactly descr, fortran_order and shape")
    shape, fortran = header["shape"], header["fortran_order"]
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise damaged(f"declares shape {shape!r}, not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise damaged(f"declares fortran_order {fortran!r}, not True or False")
    try:
        dtype = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError, IndexError, SyntaxError, RecursionError):
        raise damaged(f"declares dtype {header['descr']!r}, which NumPy does not know") from None
    return shape, dtype, fortran


def _reason(e, key):
    """What went wrong, in words, from the exception a damaged zip or .npy member raised."""
    where = f"array {key}" if key is not None else "its zip directory"
    if isinstance(e, zipfile.BadZipFile) and "CRC" in str(e):
        return f"{where} fails its CRC-32 checksum (its bytes changed after it was written)"
    if isinstance(e, (zlib.error, lzma.LZMAError)):
        return f"the compressed data of {where} is corrupt"
    if isinstance(e, EOFError):
        return f"{where} ends before its data does"
    if isinstance(e, NotImplementedError):
        return f"{where} uses a zip feature revlearn does not read"
    if isinstance(e, MemoryError):
        return f"{where} does not fit in memory"
    if isinstance(e, zipfile.BadZipFile) and key is None:
        return "its zip directory cannot be read (the file is cut short or overwritten)"
    if isinstance(e, zipfile.BadZipFile):
        return f"the zip entry of {where} is broken (it does not match the zip directory)"
    if isinstance(e, OSError) and e.errno == errno.EINVAL:
        return f"the zip directory places {where} outside the file"
    return f"{where} cannot be read ({type(e).__name__})"
