"""
The one atomic file writer of mailfleet: a file is either its old content or its new one,
never half of it, whoever reads it meanwhile (postmap, the detector, another worker).

The new content goes to a private temporary file in the target's directory (same file
system, so the rename is atomic), gets its mode and owner before the first byte (a key is
never readable by others, not even for a moment), is flushed to disk and renamed over the
target; on any failure the temporary file is removed and the target is untouched.

Pure Python, no Salt imports: execution modules, states, runners, the ext_pillar and the
detector import it plainly (Salt puts the utils directories on ``sys.path``).
"""
import json
import os
import tempfile

__virtualname__ = "mailfleet_files"


def __virtual__():
    return __virtualname__


def write_atomic(path, data, mode=0o600, uid=None, gid=None, fsync=True, folder_mode=0o700):
    """Replace ``path`` with ``data`` (str: UTF-8, or bytes) in one step.

    ``mode``/``uid``/``gid``: set on the temporary file before anything is written.
    ``fsync``: the data reaches the disk before the rename (off for caches that are cheap to
    rebuild). The directory is created (``folder_mode``) when missing."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=folder_mode, exist_ok=True)
    if isinstance(data, str):
        raw = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:  # bytes(42) would be 42 zero bytes: a caller's mistake must not become a file
        raise TypeError(f"write_atomic({path!r}): data must be str or bytes, not {type(data).__name__}")
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if fsync:  # the rename itself survives a crash (a key written, then power lost)
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path, obj, mode=0o600, fsync=True, **dump):
    """:func:`write_atomic` of ``obj`` as JSON (``sort_keys`` unless told otherwise)."""
    dump.setdefault("sort_keys", True)
    write_atomic(path, json.dumps(obj, **dump), mode=mode, fsync=fsync)
