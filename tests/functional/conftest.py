"""A real MariaDB for the functional tests: our own mariadbd (own datadir, own unix
socket, no networking) started once per session and stopped by PID at the end; each
test gets a fresh database with PostfixAdmin 3.3.13's schema and the sync account."""
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql
import pytest
from pymysql.constants import CLIENT

from vusers_testdata import sample_pillar

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "salt" / "mail" / "files" / "postfixadmin-3.3.13.sql"
SYNC_USER = "mailfleet_sync"
SYNC_PASSWORD = "sync-test-password"
# What the sync account gets on a mail host (salt/mail/database.sls): no more.
SYNC_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, CREATE"
VUSER_TABLES = ("domain", "mailbox", "alias", "alias_domain")


def _binary(name):
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(f"{name} not found: install mariadb-server (scripts/install-deps.sh)")


class MariaDB:
    def __init__(self, socket_path):
        self.socket = str(socket_path)

    def root(self, database=None, **kw):
        return pymysql.connect(unix_socket=self.socket, user="root", database=database,
                               charset="utf8mb4", autocommit=True, ssl_disabled=True, **kw)

    def load_schema(self, database):
        conn = self.root(database, client_flag=CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as cur:
                cur.execute(SCHEMA.read_text(encoding="utf-8"))
                while cur.nextset():
                    pass
        finally:
            conn.close()


class Database:
    """One test's database: the pillar `db` settings for it, and root helpers."""

    def __init__(self, server, name):
        self.server = server
        self.name = name

    @property
    def pillar_db(self):
        return {"name": self.name, "host": "localhost", "socket": self.server.socket,
                "sync_user": SYNC_USER, "sync_password": SYNC_PASSWORD}

    def conn(self):
        return self.server.root(self.name)

    def query(self, sql, args=None):
        conn = self.conn()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def execute(self, sql, args=None):
        conn = self.conn()
        try:
            with conn.cursor() as cur:
                return cur.execute(sql, args)
        finally:
            conn.close()

    def tables(self):
        return {r[f"Tables_in_{self.name}"] for r in self.query("SHOW TABLES")}

    def checksum(self):
        """CHECKSUM TABLE of the PostfixAdmin tables and the ownership table (when present)."""
        tables = [t for t in VUSER_TABLES + ("mailfleet_managed",) if t in self.tables()]
        rows = self.query("CHECKSUM TABLE " + ", ".join(f"`{t}`" for t in tables))
        return {r["Table"].split(".", 1)[1]: r["Checksum"] for r in rows}

    def row(self, table, key_col, key):
        rows = self.query(f"SELECT * FROM `{table}` WHERE `{key_col}` = %s", (key,))
        return rows[0] if rows else None


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory):
    mariadbd = _binary("mariadbd")
    install_db = _binary("mariadb-install-db")
    # A RAM-backed datadir when there is one: fsync costs nothing there, so the per-test
    # databases (DDL of 13 tables) are quick; removed at the end of the session.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    base = Path(tempfile.mkdtemp(prefix="mailfleet-mariadb-", dir=shm)) if shm else tmp_path_factory.mktemp("mariadb")
    datadir, sock, log = base / "data", base / "mysqld.sock", base / "mariadbd.log"
    subprocess.run(
        [install_db, "--no-defaults", f"--datadir={datadir}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
    )
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [mariadbd, "--no-defaults", f"--datadir={datadir}", f"--socket={sock}",
             "--skip-networking", "--user=root", f"--pid-file={base / 'mariadbd.pid'}",
             # Debian's server defaults (50-server.cnf), so the schema lands as on a host
             "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
             # a test server: durability traded for speed
             "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=256M",
             "--innodb-log-file-size=128M", "--skip-log-bin", "--max-connections=64"],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = MariaDB(sock)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mariadbd exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
            try:
                server.root().close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mariadbd did not answer on {sock}:\n{log.read_text(errors='replace')[-3000:]}")
                time.sleep(0.1)
        conn = server.root()
        with conn.cursor() as cur:
            cur.execute("CREATE USER %s@'localhost' IDENTIFIED BY %s", (SYNC_USER, SYNC_PASSWORD))
        conn.close()
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        if shm:
            shutil.rmtree(base, ignore_errors=True)


_counter = itertools.count(1)


@pytest.fixture
def db(mariadb):
    """A fresh database (PostfixAdmin 3.3.13 schema, loaded from the committed SQL) the
    sync account may use; dropped afterwards."""
    name = f"vusers_{os.getpid()}_{next(_counter)}"
    conn = mariadb.root()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cur.execute(f"GRANT {SYNC_PRIVILEGES} ON `{name}`.* TO %s@'localhost'", (SYNC_USER,))
    mariadb.load_schema(name)
    yield Database(mariadb, name)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE `{name}`")
    conn.close()


@pytest.fixture
def pillar(db):
    return sample_pillar(db)
