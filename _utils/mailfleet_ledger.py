"""
The master's ledger file: one sqlite database shared by the runners (bans, certificate
actions, outbound modes, SASL holds, alerts) and read by the ``mailfleet_bans`` ext_pillar.

Each runner keeps its own tables and queries; what they share is here: where the file is and
how it is opened. The runners and the ext_pillar ``import mailfleet_ledger``: Salt's runner
and pillar loaders put the utils directories (``salt://_utils``, synced to the master's
extension_modules or found through ``module_dirs``) on ``sys.path`` while they load.
"""
import os
import sqlite3
import threading

__virtualname__ = "mailfleet_ledger"

BUSY_TIMEOUT = 30  # seconds a writer waits for another (reactor threads, runner CLIs, schedules)


def __virtual__():
    return __virtualname__


def path(opts):
    """The ledger's path: master option ``mailfleet_ledger``, else ``<cachedir>/mailfleet/ledger.sqlite``."""
    return opts.get("mailfleet_ledger") or os.path.join(opts["cachedir"], "mailfleet", "ledger.sqlite")


def connect(file, schema, rows=True):
    """Open (creating) the ledger at ``file`` with ``schema`` applied (CREATE ... IF NOT EXISTS).

    Autocommit (``isolation_level=None``): callers group writes with ``BEGIN IMMEDIATE``, so a
    decision and its record are one transaction. WAL, so the ext_pillar and ``salt-run``
    listings read while a runner writes. The file is root-only (it names attackers' addresses
    and the postmaster's users); ``":memory:"`` is accepted for tests."""
    file = os.fspath(file)
    memory = file == ":memory:"
    if not memory:
        os.makedirs(os.path.dirname(file) or ".", mode=0o700, exist_ok=True)
        create_root_only(file)
        _root_only(file)
    db = sqlite3.connect(file, timeout=BUSY_TIMEOUT, isolation_level=None)
    if rows:
        db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(schema)
    if not memory:
        _root_only(file)
    return db


def create_root_only(file):
    """Create an empty sqlite file 0600 unless it exists, without ever opening ``file`` itself.

    0600 before SQLite opens it: SQLite gives the -wal and -shm files the database file's mode,
    so they are root-only from their first byte. Never opened here because POSIX drops every
    lock a process holds on a file when any descriptor of it is closed: an ``open``+``close``
    of the ledger in one reactor thread released the locks of the others' connections, another
    process closing its connection then took the ledger for unused, checkpointed and deleted
    the WAL under them ("database disk image is malformed"). The empty file is made under a
    private name and linked into place, so no descriptor of the shared file is closed."""
    if os.path.exists(file):
        return
    tmp = f"{file}.{os.getpid()}.{threading.get_ident()}.new"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        os.link(tmp, file)
    except FileExistsError:
        pass  # another process or thread created it first
    finally:
        os.unlink(tmp)


def _root_only(file):
    """0600 on the ledger and its WAL files (one left by an older version included)."""
    for name in (file, f"{file}-wal", f"{file}-shm"):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover  (a file we cannot chmod is not ours to fix here)
            pass


def connect_ro(file):
    """Open the ledger read-only (the ext_pillar); None when it does not exist yet."""
    file = os.fspath(file)
    if not os.path.exists(file):
        return None
    db = sqlite3.connect(f"file:{file}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    db.row_factory = sqlite3.Row
    return db


def has_table(db, name):
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


class Tables:
    """Base of a runner's own tables in the ledger: ``SCHEMA`` is applied when opened, and
    ``with tables:`` is one write transaction (BEGIN IMMEDIATE: writers wait their turn, so a
    decision and its record cannot interleave with another thread's)."""

    SCHEMA = ""
    ROWS = True  # sqlite3.Row results (name access); False for plain tuples

    def __init__(self, file):
        self.path = os.fspath(file)
        self.db = connect(self.path, self.SCHEMA, rows=self.ROWS)

    def close(self):
        self.db.close()

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, *_):
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

