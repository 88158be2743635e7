"""The master's ledger file (_utils/mailfleet_ledger.py), shared by five runners and the
mailfleet_bans ext_pillar: where it is, who may read it, and that readers cannot write."""
import os
import sqlite3
import stat

import pytest

import mailfleet_ledger as ml

SCHEMA = "CREATE TABLE IF NOT EXISTS bans (id INTEGER PRIMARY KEY, address TEXT NOT NULL);"


def test_path_is_the_master_option_or_under_the_cachedir():
    assert ml.path({"mailfleet_ledger": "/srv/ledger.sqlite", "cachedir": "/var/cache/salt/master"}) == \
        "/srv/ledger.sqlite"
    assert ml.path({"cachedir": "/var/cache/salt/master"}) == "/var/cache/salt/master/mailfleet/ledger.sqlite"


def test_connect_creates_a_root_only_file_with_the_schema(tmp_path):
    file = tmp_path / "mailfleet" / "ledger.sqlite"
    db = ml.connect(file, SCHEMA)
    try:
        db.execute("INSERT INTO bans (address) VALUES ('198.19.0.1')")   # autocommit
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(db.execute("SELECT * FROM bans").fetchone()) == {"id": 1, "address": "198.19.0.1"}
    finally:
        db.close()
    assert stat.S_IMODE(os.stat(file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(file.parent).st_mode) == 0o700
    db = ml.connect(file, SCHEMA)            # a second runner: the schema is applied again, rows kept
    try:
        assert db.execute("SELECT count(*) FROM bans").fetchone()[0] == 1
    finally:
        db.close()


def test_connect_in_memory_for_tests_and_plain_tuples_on_request():
    db = ml.connect(":memory:", SCHEMA, rows=False)
    db.execute("INSERT INTO bans (address) VALUES ('2001:db8::1')")
    assert db.execute("SELECT address FROM bans").fetchone() == ("2001:db8::1",)
    db.close()


def test_the_read_only_view_cannot_write_and_a_missing_ledger_is_none(tmp_path):
    file = tmp_path / "ledger.sqlite"
    assert ml.connect_ro(file) is None
    assert not file.exists()                 # the ext_pillar never creates it
    ml.connect(file, SCHEMA).close()
    ro = ml.connect_ro(file)
    try:
        assert ml.has_table(ro, "bans") and not ml.has_table(ro, "outbound")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.execute("INSERT INTO bans (address) VALUES ('198.19.0.2')")
    finally:
        ro.close()


def test_the_ledger_wal_and_shm_files_are_root_only_too(tmp_path):
    old = os.umask(0o022)  # a master's usual umask
    try:
        db = ml.connect(tmp_path / "ledger.sqlite", "CREATE TABLE IF NOT EXISTS t (x)")
        db.execute("INSERT INTO t VALUES (1)")
        for name in ("ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        db.close()
    finally:
        os.umask(old)


def _open_and_close_elsewhere(file):
    """Another master process (a runner CLI, the drain schedule) reading the ledger and closing it."""
    import subprocess
    import sys
    code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT count(*) FROM sqlite_master').fetchone(); c.close()")
    subprocess.run([sys.executable, "-c", code, os.fspath(file)], check=True, timeout=60)


def test_a_runner_opening_the_ledger_keeps_the_locks_of_another_thread_in_its_process(tmp_path):
    # Reactor runners are threads of one master process. POSIX drops every lock a process holds
    # on a file when any descriptor of it is closed: opening the ledger must not open and close
    # the database file itself, or another process closing its connection believes it is the
    # last one, checkpoints and deletes the WAL under the open connections ("database disk
    # image is malformed" on the master, seen in the lab within seconds of the first ban).
    file = tmp_path / "ledger.sqlite"
    first = ml.connect(file, SCHEMA)
    try:
        first.execute("INSERT INTO bans (address) VALUES ('198.19.0.1')")
        second = ml.connect(file, SCHEMA)          # a second reactor job opens it meanwhile
        _open_and_close_elsewhere(file)
        assert os.path.exists(f"{file}-wal"), "another process deleted the WAL of open connections"
        second.execute("INSERT INTO bans (address) VALUES ('198.19.0.2')")
        second.close()
        assert first.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert first.execute("SELECT count(*) FROM bans").fetchone()[0] == 2
    finally:
        first.close()
