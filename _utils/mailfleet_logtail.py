"""
The detector's reader of ``/var/log/mail.log``: complete lines from a saved offset, across
rotation and truncation. Pure Python, imported plainly (Salt puts the utils directories on
``sys.path``).

Tailing
-------
:class:`Tailer` reads complete lines from a saved offset, and survives rotation by rename
(it finishes the old file through its open descriptor, or through ``<path>.1`` after a
restart, then starts the new file at 0), truncation in place (size below the offset, or the
bytes before the offset changed: it restarts at 0) and a missing file. Its ``state`` is a
small JSON-able dict to persist between runs.
"""
import hashlib
import json
import os

import mailfleet_files  # salt://_utils: the one atomic writer

__virtualname__ = "mailfleet_logtail"


def __virtual__():
    return __virtualname__


_SIG_LEN = 64  # bytes before the offset remembered to notice a file rewritten in place


class _File:
    """One open log file: descriptor, identity, read offset and the signature before it."""

    def __init__(self, path, offset=0, sig=""):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(self.fd)
        self.id = (st.st_dev, st.st_ino)
        self.offset, self.sig = offset, sig
        self.truncated = False
        self.check()

    def size(self):
        return os.fstat(self.fd).st_size

    def signature(self, offset):
        lo = max(0, offset - _SIG_LEN)
        return hashlib.blake2b(os.pread(self.fd, offset - lo, lo), digest_size=12).hexdigest()

    def check(self):
        """Back to 0 when the file shrank below the offset or was rewritten under it."""
        if self.offset and (self.offset > self.size() or self.signature(self.offset) != self.sig):
            self.offset, self.sig, self.truncated = 0, "", True

    def seek_end(self):
        """Start after the last complete line (never in the middle of one)."""
        size = self.size()
        lo = max(0, size - 65536)
        tail = os.pread(self.fd, size - lo, lo)
        nl = tail.rfind(b"\n")
        self.offset = lo + nl + 1 if nl >= 0 else lo
        self.sig = self.signature(self.offset)

    def at_eof(self):
        return self.offset >= self.size()

    def read(self, budget, final=False):
        """Complete lines from the offset, at most ``budget`` bytes. ``final``: the file will not
        grow any more, so an unterminated last line is returned too."""
        self.check()
        size = self.size()
        want = min(size - self.offset, budget)
        if want <= 0:
            return b""
        data = os.pread(self.fd, want, self.offset)
        if not (final and len(data) == size - self.offset):
            cut = data.rfind(b"\n") + 1
            if cut:
                data = data[:cut]
            elif len(data) < budget:
                return b""  # a line still being written: wait for its newline
            # else: one line longer than the budget, handed over in pieces
        self.offset += len(data)
        self.sig = self.signature(self.offset)
        return data

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Tailer:
    """Follows a log file from a saved offset, across rotation and truncation.

    ``read()`` returns the complete lines (bytes, each ending with ``\\n``) written since the
    last call, at most ``max_read`` bytes of them (the rest comes with the next call).

    - Rotation by rename (logrotate ``create``, Debian's rsyslog default): the path names a new
      file. The old one stays open and is drained first; the writer keeps writing to it until
      it reopens its log (rsyslog's HUP in postrotate), so it is closed only once the new
      file has data. Lines come out in the order they were written.
    - Truncation in place (``copytruncate``) or a rewrite: the file is shorter than the offset,
      or the bytes before the offset are not the ones read: restart at 0.
    - The file missing: keep reading the open one; the new file is read from 0 when it appears.
    - A restart: ``Tailer(path, state)`` with the ``state`` of the previous instance resumes at
      its offset; if the file was rotated meanwhile, the rest of the old file is read from
      ``<path>.1`` (``rotated``: names to look in) before the new one.

    Without a state it starts at the end of the file as it is when the Tailer is made, after
    its last complete line (``from_start=True``: at the beginning); a file that does not exist
    yet is read from its beginning when it appears.
    ``notes`` lists what happened during the last ``read()`` ("rotated", "truncated", ...).
    """

    def __init__(self, path, state=None, *, from_start=False, max_read=16 << 20, rotated=None):
        self.path = os.fspath(path)
        self.max_read = max_read
        self.rotated = tuple(rotated) if rotated is not None else (self.path + ".1",)
        self.notes = []
        self._cur = None  # the file at self.path
        self._old = None  # a rotated-away file still being drained
        self._saved = dict(state) if state else None  # until the file is open, then on close
        self._from_start = from_start
        self._fresh = True  # notes of the opening are kept for the first read()
        self._start()

    @property
    def state(self):
        """{"dev", "ino", "offset", "sig"} of the file at ``path`` (JSON-able), or None."""
        f = self._cur
        if f is None:
            return dict(self._saved) if self._saved else None
        return {"dev": f.id[0], "ino": f.id[1], "offset": f.offset, "sig": f.sig}

    def close(self):
        self._saved = self.state
        for f in (self._old, self._cur):
            if f is not None:
                f.close()
        self._old = self._cur = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _open(self, path, offset=0, sig=""):
        try:
            f = _File(path, offset, sig)
        except FileNotFoundError:
            return None
        if f.truncated:
            self.notes.append(("truncated", path))
            f.truncated = False
        return f

    def _start(self):
        saved, self._saved = self._saved, None
        here = self._stat()
        if saved:
            key = (saved.get("dev"), saved.get("ino"))
            offset, sig = int(saved.get("offset", 0)), saved.get("sig", "")
            if here == key:
                self._cur = self._open(self.path, offset, sig)
                return
            for cand in self.rotated:  # rotated while we were away
                try:
                    st = os.stat(cand)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == key:
                    self._old = self._open(cand, offset, sig)
                    self.notes.append(("resumed-rotated", cand))
                    break
            else:
                self.notes.append(("lost-rotated", self.path))
            self._cur = self._open(self.path)
            return
        self._cur = self._open(self.path)
        if self._cur is not None and not self._from_start:
            self._cur.seek_end()

    def read(self):
        if self._fresh:
            self._fresh = False
        else:
            self.notes = []
        out = []
        here = self._stat()
        if here is None:
            if self._cur is not None:
                self.notes.append(("missing", self.path))
        elif self._cur is None or self._cur.id != here:
            if self._cur is not None:
                self.notes.append(("rotated", self.path))
                if self._old is not None:  # rotated twice before the first was drained
                    out.append(self._old.read(self.max_read, final=True))
                    self._old.close()
                self._old = self._cur
            self._cur = self._open(self.path)
        budget = self.max_read - sum(map(len, out))
        if self._old is not None:
            data = self._old.read(budget)
            out.append(data)
            budget -= len(data)
            if budget <= 0:
                return b"".join(out)
            # No complete line left in the old file. Its writer has moved on once the new file
            # has data: then take an unterminated last line, if any, and close it.
            if self._cur is None or self._cur.size() == 0:
                return b"".join(out)
            tail = self._old.read(budget, final=True)
            out.append(tail)
            budget -= len(tail)
            self._old.close()
            self._old = None
        if self._cur is not None and budget > 0:
            out.append(self._cur.read(budget))
            if self._cur.truncated:
                self.notes.append(("truncated", self.path))
                self._cur.truncated = False
        return b"".join(out)


def load_state(path):
    """A Tailer state saved by :func:`save_state`, or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def save_state(path, state):
    """Write a Tailer state atomically (write to a temporary file, then rename)."""
    mailfleet_files.write_json(path, state, mode=0o600, sort_keys=False)
