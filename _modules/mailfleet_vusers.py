"""
mailfleet virtual users: PostfixAdmin 3.3 rows in MariaDB, synchronised from pillar.

The pillar (``mailfleet:``) is validated as a whole, turned into the rows it declares
(``domain``, ``mailbox``, ``alias``, ``alias_domain``), diffed against what the database
holds and the difference written in ONE transaction, in batches. PostfixAdmin's tables are
never altered: the rows mailfleet manages are recorded in a side table, ``mailfleet_managed``.

Scale (10,000 domains, 100,000 mailboxes: bench/vusers_sync.py): MariaDB digests the rows
and ownership records of every domain (its partition) while Python validates the pillar;
the pillar's rows get the same digests, and only partitions whose digests differ are read
and diffed (see "partition digests" below), so a no-op sync reads no rows at all.

Everything that decides (validation, desired rows, diff, summary) is a plain function
without ``__salt__``/``__pillar__``; the Salt functions at the bottom are thin glue.

Storage rules (PostfixAdmin 3.3): mailbox.username is the full address, maildir
``<domain>/<local>/``, quota in bytes; every mailbox has an alias row address=goto=itself;
a catch-all is the alias ``@<domain>``; booleans are tinyint 1/0; created/modified are
datetimes. domain.maxquota is in MiB (set PostfixAdmin's ``quota_multiplier`` to 1048576
so it agrees), domain.quota (total per domain), aliases and mailboxes limits are written
as 0 (unlimited) when mailfleet creates a domain and left alone after that.

Ownership: a row is managed once the pillar declared it (created or adopted). A managed
row gone from the pillar is deactivated (active=0), never deleted, unless its domain sets
``retention: {purge_after_days: N}`` and it has been inactive for N days: then it is
deleted and, for a mailbox, its maildir moved to ``<vmail>/.archive/<domain>/<local>-<UTC
timestamp>`` (never deleted). Rows mailfleet never managed are left alone, unless
``mailfleet:exclusive`` is true: then they are deactivated (and managed from then on).
"""

import datetime
import gc
import logging
import math
import os
import shutil
import threading
import time

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers"


def __virtual__():
    return __virtualname__


DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"
DEFAULT_VMAIL = "/var/vmail"
MANAGED_TABLE = "mailfleet_managed"
SUMMARY_LIMIT = 10
LOCK_NAME = "mailfleet_vusers"

TABLES = ("domain", "mailbox", "alias", "alias_domain")
KEY = {"domain": "domain", "mailbox": "username", "alias": "address", "alias_domain": "alias_domain"}
# Columns mailfleet keeps equal to the pillar; `active` is always last.
MANAGED_COLS = {
    "domain": ("description", "maxquota", "active"),
    "mailbox": ("password", "name", "quota", "local_part", "domain", "active"),
    "alias": ("goto", "domain", "active"),
    "alias_domain": ("target_domain", "active"),
}
# Columns written only when mailfleet inserts the row (an adopted row keeps its own).
INSERT_COLS = {
    "domain": ("aliases", "mailboxes", "quota", "transport", "backupmx"),
    "mailbox": ("maildir",),
    "alias": (),
    "alias_domain": (),
}
DOMAIN_INSERT_DEFAULTS = (0, 0, 0, "virtual", 0)  # unlimited aliases/mailboxes/quota
# Rows never touched, whatever `exclusive` says (PostfixAdmin's superadmin pseudo-domain).
PROTECTED = {("domain", "all")}

# The pillar validator is shared with the master's ext_pillar (_utils/mailfleet_pillar.py).
from mailfleet_pillar import (  # noqa: F401  (re-exported: callers use mailfleet_vusers.<name>)
    PREFIX,
    SCHEMES,
    _SCHEME_HINT,
    _HASH_RE,
    _PLAIN_SCHEMES,
    _SCHEME_RE,
    _CONTROL,
    _LOCAL_RE,
    _QUOTA_RE,
    _UNITS,
    MIB,
    BIGINT_MAX,
    ValidationError,
    _Report,
    _MEMO_MAX,
    _QUOTA_MEMO,
    _LOCAL_MEMO,
    parse_quota,
    _parse_quota,
    format_quota,
    _LDH_LABEL,
    _PLAIN_NAME,
    idna_domain,
    _idna_domain,
    check_local_part,
    _check_local_part,
    _PLAIN_ADDR,
    parse_address,
    _HASH_OK,
    check_password,
    _text,
    _bmp_text,
    _bool,
    validate_pillar,
    PACKED_KEY,
    _unpacked,
    _validate_domain,
    _local_in_domain,
    _check_targets,
)

# -------------------------------------------------------------------- desired rows


def desired_rows(model, host=None):
    """Rows the pillar declares, per table: ``{table: {key: (managed, insert_only)}}``
    with the column order of MANAGED_COLS / INSERT_COLS.

    ``host``: when given, domains whose ``hosts`` list does not name it are not served
    here and declare nothing. Returns ``(desired, retention)``: retention maps every
    pillar domain (and alias domain) to its purge_after_days (or None)."""
    desired = {t: {} for t in TABLES}
    domains, mailboxes, aliases, alias_domains = (desired[t] for t in TABLES)
    retention = {}
    host = host.lower() if isinstance(host, str) else None
    for dom, d in model["domains"].items():
        retention[dom] = d["retention"]
        for adom in d["alias_domains"]:
            retention[adom] = d["retention"]
        if host is not None and d["hosts"] is not None and host not in d["hosts"]:
            continue
        domains[dom] = (
            (d["description"], math.ceil(d["maxquota"] / MIB) if d["maxquota"] else 0, int(d["active"])),
            DOMAIN_INSERT_DEFAULTS,
        )
        at_dom = "@" + dom
        for local, m in d["mailboxes"].items():
            addr = local + at_dom
            active = int(m["active"])
            mailboxes[addr] = ((m["password"], m["name"], m["quota"], local, dom, active), (f"{dom}/{local}/",))
            aliases[addr] = ((addr, dom, active), ())
        for local, a in d["aliases"].items():
            aliases[local + at_dom] = ((",".join(a["targets"]), dom, 1), ())  # "" + at_dom: the catch-all
        for adom in d["alias_domains"]:
            alias_domains[adom] = ((dom, int(d["active"])), ())
    return desired, retention


# ---------------------------------------------------------------------------- diff


def _cmp_form(table, managed):
    """Comparable form of a managed-column tuple (DB and pillar alike)."""
    if table == "alias":
        goto, dom, active = managed
        return (frozenset(t.strip().lower() for t in (goto or "").split(",") if t.strip()), (dom or "").lower(), int(active))
    if table == "mailbox":
        pw, name, quota, local, dom, active = managed
        return (pw or "", name or "", int(quota or 0), (local or "").lower(), (dom or "").lower(), int(active))
    if table == "domain":
        desc, maxq, active = managed
        return (desc or "", int(maxq or 0), int(active))
    target, active = managed
    return ((target or "").lower(), int(active))


def _row_domain(table, key, managed):
    if table == "domain":
        return key
    if table == "alias_domain":
        return (managed[0] or "").lower()
    return (managed[-2] or "").lower()


class Diff:
    """What a sync changes. Keys are lower-case; see summarize() for a readable form."""

    def __init__(self, now):
        self.now = now
        self.insert = {t: [] for t in TABLES}  # [(key, managed, insert_only)]
        self.update = {t: [] for t in TABLES}  # [(key, managed, insert_only, [changed columns])]
        self.deactivate = {t: [] for t in TABLES}  # [key]
        self.purge = {t: [] for t in TABLES}  # [key]
        self.adopt = {t: [] for t in TABLES}  # [key] existing rows mailfleet takes over
        self.archive = []  # [(username, maildir relative, archive relative)]
        self.managed_upsert = []  # [(tbl, item, domain, deactivated, purge_after_days)]
        self.managed_delete = []  # [(tbl, item)]
        self.notes = []  # things worth saying (purges held back, ...)

    @property
    def empty(self):
        return not (
            any(self.insert.values()) or any(self.update.values()) or any(self.deactivate.values())
            or any(self.purge.values()) or self.managed_upsert or self.managed_delete
        )

    def counts(self):
        out = {}
        for kind in ("insert", "update", "deactivate", "purge", "adopt"):
            for t in TABLES:
                n = len(getattr(self, kind)[t])
                if n:
                    out.setdefault(t, {})[kind] = n
        if self.archive:
            out["maildir"] = {"archive": len(self.archive)}
        return out


def _archive_rel(dom, local, now):
    return f".archive/{dom}/{local}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def _safe_rel(path):
    if not path or path.startswith("/") or "\\" in path:
        return False
    parts = [p for p in path.split("/") if p]
    return bool(parts) and all(p not in (".", "..") for p in parts) and not parts[0].startswith(".")


def compute_diff(desired, current, managed, now, exclusive=False, retention=None):
    """Diff the desired rows against the database.

    desired:  ``{table: {key: (managed, insert_only)}}`` from desired_rows()
    current:  same shape, read from the database (keys lower-cased)
    managed:  ``{(table, key): (domain, deactivated, purge_after_days)}``
    now:      the database's NOW() (datetime)
    exclusive: rows never managed may be deactivated too
    retention: ``{domain: purge_after_days or None}`` from the pillar
    """
    retention = retention or {}
    diff = Diff(now)
    for t in TABLES:
        want, have = desired[t], current[t]
        for key, (m, ins) in want.items():
            cur = have.get(key)
            if cur is None:
                diff.insert[t].append((key, m, ins))
            elif cur[0] != m:  # equal tuples: the common case, no normalising needed
                a, b = _cmp_form(t, cur[0]), _cmp_form(t, m)
                if a != b:
                    changed = [c for c, x, y in zip(MANAGED_COLS[t], a, b) if x != y]
                    diff.update[t].append((key, m, ins, changed))
            dom = _row_domain(t, key, m)
            entry = (dom, None, retention.get(dom))
            old = managed.get((t, key))
            if old is None:
                if cur is not None:
                    diff.adopt[t].append(key)
                diff.managed_upsert.append((t, key) + entry)
            elif old != entry:
                diff.managed_upsert.append((t, key) + entry)

        for key, (m, ins) in have.items():
            if key in want or (t, key) in PROTECTED:
                continue
            old = managed.get((t, key))
            if old is None and not exclusive:
                continue
            dom = old[0] if old is not None else _row_domain(t, key, m)
            days = retention.get(dom, old[2] if old is not None else None)
            deactivated = old[1] if old is not None else None
            active = int(m[-1])
            if active:
                diff.deactivate[t].append(key)
                deactivated = now
            elif deactivated is None:
                deactivated = now  # inactive, but not by us: the retention clock starts now
            elif days is not None and now - deactivated >= datetime.timedelta(days=days):
                diff.purge[t].append(key)
                continue
            if old != (dom, deactivated, days):
                diff.managed_upsert.append((t, key, dom, deactivated, days))

    for (t, key) in managed:
        if key not in current[t] and key not in desired[t]:
            diff.managed_delete.append((t, key))

    # a purged mailbox's maildir is archived, never deleted
    keep = []
    for key in diff.purge["mailbox"]:
        m, ins = current["mailbox"][key]
        local, dom, maildir = m[3] or key.partition("@")[0], m[4] or key.partition("@")[2], ins[0]
        if not _safe_rel(maildir or ""):
            diff.notes.append(f"mailbox {key}: maildir {maildir!r} is not a plain relative path; not purged")
            continue
        diff.archive.append((key, maildir, _archive_rel(dom.lower(), local.lower(), now)))
        keep.append(key)
    diff.purge["mailbox"] = keep

    # a domain is purged only when nothing that stays refers to it
    if diff.purge["domain"]:
        gone = {t: set(diff.purge[t]) for t in TABLES}
        used = set()
        for t in ("mailbox", "alias", "alias_domain"):
            for key, (m, ins) in current[t].items():
                if key not in gone[t]:
                    used.add(_row_domain(t, key, m))
        for m, _ in desired["alias_domain"].values():
            used.add(m[0])
        held = [d for d in diff.purge["domain"] if d in used]
        for d in held:
            diff.notes.append(f"domain {d}: rows still refer to it; not purged")
        diff.purge["domain"] = [d for d in diff.purge["domain"] if d not in used]

    for t in TABLES:
        for key in diff.purge[t]:
            diff.managed_delete.append((t, key))
    return diff


def summarize(diff, limit=SUMMARY_LIMIT, full=False):
    """A readable summary: per table and kind, the count and the first ``limit`` keys
    (``items``: all of them, with ``full``). Updates name the changed columns, never
    their values (a password hash is a secret)."""
    out = {}

    def put(table, kind, items, render=lambda x: x):
        if items:
            shown = items if full else items[:limit]
            out.setdefault(table, {})[kind] = {"count": len(items), "items" if full else "first": [render(i) for i in shown]}

    for t in TABLES:
        put(t, "insert", diff.insert[t], lambda i: i[0])
        put(t, "update", diff.update[t], lambda i: f"{i[0]} ({', '.join(i[3])})")
        put(t, "deactivate", diff.deactivate[t])
        put(t, "purge", diff.purge[t])
        put(t, "adopt", diff.adopt[t])
    put("maildir", "archive", diff.archive, lambda i: f"{i[1]} -> {i[2]}")
    if diff.notes:
        out["notes"] = diff.notes if full else diff.notes[:limit]
    return out


def describe(diff):
    """One line: counts of what the diff does."""
    parts = []
    for kind, label in (("insert", "insert"), ("update", "update"), ("deactivate", "deactivation"), ("purge", "purge")):
        n = sum(len(v) for v in getattr(diff, kind).values())
        if n:
            per = ", ".join(f"{t} {len(v)}" for t, v in getattr(diff, kind).items() if v)
            parts.append(f"{n} {label}{'s' if n != 1 else ''} ({per})")
    if diff.archive:
        parts.append(f"{len(diff.archive)} maildir archive{'s' if len(diff.archive) != 1 else ''}")
    n = sum(len(v) for v in diff.adopt.values())
    if n:
        parts.append(f"{n} existing row{'s' if n != 1 else ''} adopted")
    if not parts and (diff.managed_upsert or diff.managed_delete):
        parts.append(f"{len(diff.managed_upsert) + len(diff.managed_delete)} ownership record updates")
    return "; ".join(parts) if parts else "no changes"


# ------------------------------------------------------------------------ database

# The ownership side table. PostfixAdmin's own tables are never altered.
MANAGED_DDL = f"""CREATE TABLE IF NOT EXISTS `{MANAGED_TABLE}` (
  `tbl` varchar(20) CHARACTER SET ascii NOT NULL,
  `item` varchar(255) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL,
  `domain` varchar(255) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL DEFAULT '',
  `since` datetime NOT NULL,
  `deactivated` datetime DEFAULT NULL,
  `purge_after_days` int(10) unsigned DEFAULT NULL,
  PRIMARY KEY (`tbl`,`item`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='mailfleet: PostfixAdmin rows managed from pillar'"""


class SyncError(Exception):
    """The database refused or lost the sync; the transaction was rolled back."""


DB_DEFAULTS = {"name": "postfix", "host": "localhost", "sync_user": "mailfleet_sync"}  # = the formula's


def db_settings(db, socket=None):
    """``(settings, errors)`` of ``mailfleet:db``: the formula's defaults (name postfix,
    host localhost, sync_user mailfleet_sync; ``socket`` when the pillar names none)
    under the pillar's values. sync_password is required."""
    path = f"{PREFIX}:db"
    if not isinstance(db, dict):
        return None, [f"{path}: missing or not a mapping (name, host, sync_user, sync_password)"]
    settings = dict(DB_DEFAULTS)
    settings.update({k: val for k, val in db.items() if val is not None})
    if socket and not settings.get("socket"):
        settings["socket"] = socket
    errors = []
    for k in ("name", "host", "sync_user", "sync_password"):
        if not isinstance(settings.get(k), str) or not settings[k]:
            errors.append(f"{path}:{k}: missing" if settings.get(k) in (None, "") else f"{path}:{k}: must be a string")
    if settings.get("port") is not None and (isinstance(settings["port"], bool) or not isinstance(settings["port"], int)):
        errors.append(f"{path}:port: must be a number")
    return settings, errors


def validate_db(db):
    """Errors of the ``mailfleet:db`` settings (connection parameters)."""
    return db_settings(db)[1]


def connect(db, connect_timeout=10):
    """A PyMySQL connection (autocommit off) from the ``mailfleet:db`` settings.

    ``host: localhost`` (the default) or a path means the unix socket (``socket:``,
    default /run/mysqld/mysqld.sock); anything else is TCP (``port:``, default 3306)."""
    import pymysql

    kw = {
        "user": db["sync_user"],
        "password": db.get("sync_password") or "",
        "database": db["name"],
        "charset": "utf8mb4",
        "autocommit": False,
        "connect_timeout": connect_timeout,
    }
    host = db.get("host") or "localhost"
    if db.get("socket") or host == "localhost" or host.startswith("/"):
        kw["unix_socket"] = db.get("socket") or (host if host.startswith("/") else DEFAULT_SOCKET)
        kw["ssl_disabled"] = True  # nothing to encrypt on a local socket; saves a CA-store load
    else:
        kw["host"] = host
        kw["port"] = int(db.get("port") or 3306)
    return pymysql.connect(**kw)


def managed_table_exists(conn):
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE %s", (MANAGED_TABLE,))
        return cur.fetchone() is not None


def ensure_managed_table(conn):
    """Create the ownership table when missing (DDL: outside the sync transaction)."""
    if not managed_table_exists(conn):
        with conn.cursor() as cur:
            cur.execute(MANAGED_DDL)
        conn.commit()


INT_COLS = frozenset(("maxquota", "active", "quota", "aliases", "mailboxes", "backupmx"))
_PACK_SEP = "\x1f"  # one string per row: PyMySQL's per-column cost is most of a big read


def _select_parts(t, with_managed):
    cols = MANAGED_COLS[t] + INSERT_COLS[t]
    exprs = [f"IFNULL(t.`{c}`, {0 if c in INT_COLS else repr('')})" for c in cols]
    join = ""
    if with_managed:
        exprs += ["IFNULL(m.domain, '')", "IFNULL(m.deactivated, '')", "IFNULL(m.purge_after_days, '')",
                  "m.tbl IS NOT NULL"]
        join = f" LEFT JOIN `{MANAGED_TABLE}` m ON m.tbl = %s AND m.item = t.`{KEY[t]}`"
    return cols, exprs, join


def _datetime(value):
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:  # 0000-00-00 00:00:00 and the like
        return None


def read_state(conn, with_managed=True):
    """``(current, managed)`` in compute_diff()'s shapes, with two SELECTs per table: the
    rows joined with their ownership record (each row's values packed into one string),
    and ownership records whose row is gone. Rows whose values contain the separator are
    read again column by column."""
    current, managed = {}, {}
    with conn.cursor() as cur:
        counts = {}
        if with_managed:
            cur.execute(f"SELECT tbl, COUNT(*) FROM `{MANAGED_TABLE}` GROUP BY tbl")
            counts = dict(cur.fetchall())
        for t in TABLES:
            cols, exprs, join = _select_parts(t, with_managed)
            nm, nc = len(MANAGED_COLS[t]), len(cols)
            nparts = len(exprs)
            ints = [i for i, c in enumerate(cols) if c in INT_COLS]
            cur.execute(f"SELECT t.`{KEY[t]}`, CONCAT_WS(%s, {', '.join(exprs)}) FROM `{t}` t{join}",
                        (_PACK_SEP, t) if with_managed else (_PACK_SEP,))
            rows, odd, joined = {}, [], 0
            for key, packed in cur.fetchall():
                parts = packed.split(_PACK_SEP)
                if len(parts) != nparts:
                    odd.append(key)
                    continue
                for i in ints:
                    parts[i] = int(parts[i])
                key = key.lower()
                rows[key] = (tuple(parts[:nm]), tuple(parts[nm:nc]))
                if with_managed and parts[-1] == "1":
                    joined += 1
                    days = parts[nc + 2]
                    managed[(t, key)] = (parts[nc].lower(), _datetime(parts[nc + 1]), int(days) if days else None)
            for i in range(0, len(odd), 1000):
                chunk = odd[i:i + 1000]
                sel = ", ".join(f"t.`{c}`" for c in cols)
                extra = ", m.domain, m.deactivated, m.purge_after_days, m.tbl IS NOT NULL" if with_managed else ""
                cur.execute(
                    f"SELECT t.`{KEY[t]}`, {sel}{extra} FROM `{t}` t{join} "
                    f"WHERE t.`{KEY[t]}` IN ({', '.join(['%s'] * len(chunk))})",
                    ((t,) if with_managed else ()) + tuple(chunk),
                )
                for row in cur.fetchall():
                    key = row[0].lower()
                    rows[key] = (tuple(row[1:1 + nm]), tuple(row[1 + nm:1 + nc]))
                    if with_managed and row[-1]:
                        joined += 1
                        managed[(t, key)] = ((row[1 + nc] or "").lower(), _datetime(row[2 + nc]), row[3 + nc])
            if with_managed and counts.get(t, 0) > joined:  # records whose row is gone
                cur.execute(
                    f"SELECT m.item, m.domain, m.deactivated, m.purge_after_days FROM `{MANAGED_TABLE}` m "
                    f"LEFT JOIN `{t}` t ON t.`{KEY[t]}` = m.item WHERE m.tbl = %s AND t.`{KEY[t]}` IS NULL",
                    (t,),
                )
                for item, dom, deact, days in cur.fetchall():
                    managed[(t, item.lower())] = (dom.lower(), deact, days)
            current[t] = rows
    return current, managed


# ------------------------------------------------------------------ partition digests

# A no-op sync must not pull 300,000 rows through PyMySQL (pure Python, ~10 us a row).
# Rows are grouped into partitions by the domain part of their key (a domain's own row, its
# mailboxes, aliases and catch-all; an alias domain on its own), ownership records by the
# domain part of their item. MariaDB digests every partition: per table, the row count and
# the MD5 of the compared columns (key + MANAGED_COLS, ownership records likewise), rows
# joined in byte order of their keys. The pillar's rows get the same digest in Python.
# Only partitions whose digests differ are read and diffed. Equal digests mean equal rows:
# every compared column is NOT NULL in PostfixAdmin's schema and the pillar's values never
# hold the separators (control characters are refused by validation), so with equal row
# counts an equal string can only come from equal fields. A partition's GROUP_CONCAT
# beyond max_allowed_packet is truncated: its digest never matches and it is always read.

_DIGEST_TAG = {"domain": "a", "mailbox": "b", "alias": "c", "alias_domain": "d", MANAGED_TABLE: "m"}
_DIGEST_MAX_LEN = 1 << 30  # group_concat_max_len asked for; the server caps it at max_allowed_packet


def partition_of(key):
    """The partition of a (lower-case) key: its domain part; a domain is its own."""
    return key.rpartition("@")[2]


def _part_sql(col):
    return f"LOWER(SUBSTRING_INDEX({col}, '@', -1))"


def _digest_sql(with_managed=True):
    selects = []
    for t in TABLES:
        k = f"t.`{KEY[t]}`"
        cols = ", ".join(f"t.`{c}`" for c in (KEY[t],) + MANAGED_COLS[t])
        selects.append(
            f"SELECT {_part_sql(k)} p, '{_DIGEST_TAG[t]}' k, COUNT(*) n, MD5(GROUP_CONCAT(CONCAT_WS(CHAR(31), {cols}) "
            f"ORDER BY CAST({k} AS BINARY) SEPARATOR '\\n')) h FROM `{t}` t GROUP BY p")
    if with_managed:
        selects.append(
            f"SELECT {_part_sql('m.item')} p, '{_DIGEST_TAG[MANAGED_TABLE]}' k, COUNT(*) n, MD5(GROUP_CONCAT(CONCAT_WS("
            "CHAR(31), m.tbl, m.item, m.domain, IFNULL(m.deactivated, ''), IFNULL(m.purge_after_days, '')) "
            f"ORDER BY m.tbl, CAST(m.item AS BINARY) SEPARATOR '\\n')) h FROM `{MANAGED_TABLE}` m GROUP BY p")
    return ("SELECT p, GROUP_CONCAT(k, ':', n, ':', h ORDER BY k SEPARATOR ' ') FROM ("
            + " UNION ALL ".join(selects) + ") x GROUP BY p")


def read_digests(conn, with_managed=True):
    """``{partition: digest}`` of what the database holds (see desired_digests)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION group_concat_max_len = %s", (_DIGEST_MAX_LEN,))
        cur.execute(_digest_sql(with_managed))
        return dict(cur.fetchall())


def desired_digests(desired, retention=None):
    """``{partition: digest}`` of the rows ``desired`` declares, with the ownership records
    a sync leaves behind for them: exactly what read_digests() returns for a database
    already in that state."""
    return _desired_digests(desired, retention)[0]


def _desired_digests(desired, retention=None):
    """desired_digests(), and ``{partition: {table: [keys]}}`` (keys sorted)."""
    from hashlib import md5

    retention = retention or {}
    keys = {}  # partition -> {table: [keys]}
    digests = {}  # partition -> [per-table digests]
    records = {}  # partition -> {table: ownership record strings, joined}
    for t in TABLES:
        tag = _DIGEST_TAG[t]
        fmt = "\x1f".join(["{}"] * (1 + len(MANAGED_COLS[t]))).format
        dom_index = {"domain": None, "alias_domain": 0}.get(t, -2)
        runs = {}  # partition -> ([row strings], [keys], owning domains: None when all are the partition)
        last_p = run = None
        p_lower = True
        for key, (m, _) in desired[t].items():
            p = key.rpartition("@")[2]
            if p != last_p:  # desired rows come domain by domain: few lookups
                last_p, run, p_lower = p, runs.get(p), p == p.lower()
                if run is None:
                    run = runs[p] = ([], [], None)
            run[0].append(fmt(key, *m))
            run[1].append(key)
            # the owning domain, as _row_domain() has it
            if dom_index is None:
                own = key
            else:
                own = m[dom_index]
                if own != p or not p_lower:
                    own = (own or "").lower()
            if own != p or run[2] is not None:
                if run[2] is None:  # not the common shape: the owning domain of every row
                    run = runs[p] = (run[0], run[1], [p] * (len(run[1]) - 1))
                run[2].append(own)
        for p, (rows, ks, doms) in runs.items():
            rows.sort()  # keys are unique and end at \x1f: by key, as ORDER BY the key's bytes
            digests.setdefault(p, []).append(
                f"{tag}:{len(rows)}:{md5(chr(10).join(rows).encode('utf-8')).hexdigest()}")
            if doms is None:  # every row owned by domain p: one join
                ks.sort()
                days = retention.get(p)  # p is the owning domain of every row
                pre, suf = f"{t}\x1f", f"\x1f{p}\x1f\x1f{'' if days is None else days}"
                recs = pre + (suf + "\n" + pre).join(ks) + suf
            else:
                pairs = sorted(zip(ks, doms))
                ks = [k for k, _ in pairs]
                recs = "\n".join(f"{t}\x1f{k}\x1f{dom}\x1f\x1f{'' if retention.get(dom) is None else retention[dom]}"
                                  for k, dom in pairs)
            keys.setdefault(p, {})[t] = ks
            records.setdefault(p, {})[t] = recs
    mtag = _DIGEST_TAG[MANAGED_TABLE]
    out = {}
    for p, recs in records.items():
        n = sum(len(ks) for ks in keys[p].values())
        joined = "\n".join(recs[t] for t in sorted(recs))  # ORDER BY tbl, item
        out[p] = " ".join(digests[p]) + f" {mtag}:{n}:{md5(joined.encode('utf-8')).hexdigest()}"
    return out, keys


def dirty_partitions(want, have, exclusive=False):
    """Partitions to read and diff: digests that differ, and partitions only the database
    has that hold ownership records (or any rows, when ``exclusive``)."""
    dirty = {p for p, d in want.items() if have.get(p) != d}
    mtag = _DIGEST_TAG[MANAGED_TABLE] + ":"
    for p, d in have.items():
        if p not in want and (exclusive or any(x.startswith(mtag) for x in d.split(" "))):
            dirty.add(p)
    return dirty


def digest_counts(digest):
    """``{tag: rows}`` of one partition's digest."""
    out = {}
    for part in digest.split(" "):
        tag, n, _ = part.split(":")
        out[tag] = int(n)
    return out


def read_partitions(conn, parts, counts=None, keys=None):
    """read_state() for the rows and ownership records of the partitions ``parts`` only.

    With ``counts`` (``{partition: {tag: rows}}``, from the database's digests) rows are
    looked up through indexes: mailbox and alias rows by their domain column, domains and
    alias domains by key, ownership records by the keys read and the keys in ``keys``
    (``{partition: {table: [keys]}}``, the pillar's). A table whose rows found that way
    do not add up to the digest's counts (a row filed under another domain, a record of
    a row gone) is read again by scanning for the partition."""
    current = {t: {} for t in TABLES}
    managed = {}
    parts = sorted(parts)
    if not parts:
        return current, managed
    wanted = set(parts)
    counts = counts or {}
    keys = keys or {}
    marks = ", ".join(["%s"] * len(parts))
    with conn.cursor() as cur:
        for t in TABLES:
            cols, exprs, _ = _select_parts(t, False)
            nm = len(MANAGED_COLS[t])
            key = f"t.`{KEY[t]}`"
            select = f"SELECT {key}, {', '.join(exprs)} FROM `{t}` t WHERE "
            tag = _DIGEST_TAG[t]
            found = None
            if counts:
                by = "t.`domain`" if t in ("mailbox", "alias") else key
                cur.execute(select + f"{by} IN ({marks})", parts)
                found, seen = {}, {}
                for row in cur.fetchall():
                    k = row[0].lower()
                    p = k.rpartition("@")[2]
                    if p in wanted:
                        found[k] = (tuple(row[1:1 + nm]), tuple(row[1 + nm:]))
                        seen[p] = seen.get(p, 0) + 1
                if any(seen.get(p, 0) != counts.get(p, {}).get(tag, 0) for p in parts):
                    found = None
            if found is None:
                cur.execute(select + f"{_part_sql(key)} IN ({marks})", parts)
                found = {row[0].lower(): (tuple(row[1:1 + nm]), tuple(row[1 + nm:])) for row in cur.fetchall()}
            current[t] = found
        mtag = _DIGEST_TAG[MANAGED_TABLE]
        cols = "tbl, item, domain, deactivated, purge_after_days"
        found = None
        if counts:
            pairs = set()
            for t in TABLES:
                pairs.update((t, k) for k in current[t])
                for p in parts:
                    pairs.update((t, k) for k in keys.get(p, {}).get(t, ()))
            pairs = sorted(pairs)
            found, seen = {}, {}
            for i in range(0, len(pairs), 1000):
                chunk = pairs[i:i + 1000]
                cur.execute(f"SELECT {cols} FROM `{MANAGED_TABLE}` WHERE (tbl, item) IN "
                            f"({', '.join(['(%s, %s)'] * len(chunk))})", [x for pair in chunk for x in pair])
                for tbl, item, dom, deact, days in cur.fetchall():
                    k = item.lower()
                    p = k.rpartition("@")[2]
                    if p in wanted and (tbl, k) not in found:
                        found[(tbl, k)] = ((dom or "").lower(), _datetime(deact), days)
                        seen[p] = seen.get(p, 0) + 1
            if any(seen.get(p, 0) != counts.get(p, {}).get(mtag, 0) for p in parts):
                found = None
        if found is None:
            cur.execute(f"SELECT {cols} FROM `{MANAGED_TABLE}` m WHERE {_part_sql('m.item')} IN ({marks})", parts)
            found = {(tbl, item.lower()): ((dom or "").lower(), _datetime(deact), days)
                     for tbl, item, dom, deact, days in cur.fetchall()}
        managed.update(found)
    return current, managed

def _upsert_sql(t):
    cols = (KEY[t],) + MANAGED_COLS[t] + INSERT_COLS[t] + ("created", "modified")
    updates = ", ".join(f"`{c}`=VALUES(`{c}`)" for c in MANAGED_COLS[t] + ("modified",))
    return (
        f"INSERT INTO `{t}` ({', '.join(f'`{c}`' for c in cols)}) "
        f"VALUES ({', '.join(['%s'] * len(cols))}) ON DUPLICATE KEY UPDATE {updates}"
    )


_MANAGED_UPSERT = (
    f"INSERT INTO `{MANAGED_TABLE}` (tbl, item, domain, deactivated, purge_after_days, since) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "domain=VALUES(domain), deactivated=VALUES(deactivated), purge_after_days=VALUES(purge_after_days)"
)


def _archive(vmail_dir, src_rel, dst_rel):
    """Move one maildir into the archive. Returns a note, or raises OSError."""
    src = os.path.join(vmail_dir, src_rel)
    if not os.path.lexists(src):
        return f"{src_rel}: no maildir to archive"
    dst = os.path.join(vmail_dir, dst_rel)
    base, n = dst, 1
    while os.path.lexists(dst):
        dst, n = f"{base}.{n}", n + 1
    os.makedirs(os.path.dirname(dst), mode=0o750, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError:
        shutil.move(src, dst)
    return None


def apply_diff(conn, diff, vmail_dir=DEFAULT_VMAIL, batch_size=1000, batch_callback=None, moved=None):
    """Write ``diff`` inside the connection's open transaction, in batches, then COMMIT.

    Order: upserts, deactivations, ownership records, maildir archives, purges, commit.
    ``batch_callback(conn, table, operation, rows)`` runs after every batch (tests use it
    to kill the connection mid-sync). Any database error propagates; the caller rolls
    back. Maildir moves cannot be rolled back: they happen last before the purges (the
    rows are inactive anyway) and are appended to ``moved``. Returns notes."""
    moved = [] if moved is None else moved
    now = diff.now
    notes = []

    def in_list(n):
        return ", ".join(["%s"] * n)

    def batches(rows):
        for i in range(0, len(rows), batch_size):
            yield rows[i:i + batch_size]

    def done(table, op, n):
        if batch_callback is not None:
            batch_callback(conn, table, op, n)

    with conn.cursor() as cur:
        for t in TABLES:
            rows = [(k,) + tuple(m) + tuple(ins) + (now, now) for k, m, ins in diff.insert[t]]
            rows += [(k,) + tuple(m) + tuple(ins) + (now, now) for k, m, ins, _ in diff.update[t]]
            sql = _upsert_sql(t)
            for chunk in batches(rows):
                cur.executemany(sql, chunk)
                done(t, "upsert", len(chunk))
        for t in TABLES:
            for chunk in batches(diff.deactivate[t]):
                cur.execute(f"UPDATE `{t}` SET active=0, modified=%s WHERE `{KEY[t]}` IN ({in_list(len(chunk))})", [now] + chunk)
                done(t, "deactivate", len(chunk))
        managed_rows = [u + (now,) for u in diff.managed_upsert]  # since: kept when the record exists
        for chunk in batches(managed_rows):
            cur.executemany(_MANAGED_UPSERT, chunk)
            done(MANAGED_TABLE, "upsert", len(chunk))

        failed = set()
        for user, src, dst in diff.archive:
            try:
                note = _archive(vmail_dir, src, dst)
            except OSError as exc:
                failed.add(user)
                notes.append(f"mailbox {user}: archiving {src} failed ({exc}); not purged")
            else:
                if note:
                    notes.append(note)
                else:
                    moved.append(f"{src} -> {dst}")
        for t in TABLES:
            keys = [k for k in diff.purge[t] if not (t == "mailbox" and k in failed)]
            for chunk in batches(keys):
                cur.execute(f"DELETE FROM `{t}` WHERE `{KEY[t]}` IN ({in_list(len(chunk))})", chunk)
                done(t, "purge", len(chunk))
        by_table = {}
        for t, k in diff.managed_delete:
            if not (t == "mailbox" and k in failed):
                by_table.setdefault(t, []).append(k)
        for t, keys in by_table.items():
            for chunk in batches(keys):
                cur.execute(f"DELETE FROM `{MANAGED_TABLE}` WHERE tbl=%s AND item IN ({in_list(len(chunk))})", [t] + chunk)
                done(MANAGED_TABLE, "delete", len(chunk))
    conn.commit()
    return notes


def run_sync(cfg, test=False, host=None, vmail_dir=DEFAULT_VMAIL, batch_size=1000,
             batch_callback=None, full=False, limit=SUMMARY_LIMIT, lock_timeout=60, socket=None):
    """Validate, diff and (unless ``test``) apply: the whole sync, without Salt.

    Returns a dict: result (True/False), test, changed (bool), changes (summary),
    counts, comment, errors (all of them), warnings (the first ``limit``, all with
    ``full``), warning_count, seconds, timings (per stage), partitions (how many
    partitions there are and how many were read and diffed because their digests differed;
    None when everything was read)."""
    # Hundreds of thousands of small tuples and dicts, none of them cyclic: the cyclic
    # collector would rescan the growing heap again and again (superlinear time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_sync(cfg, test, host, vmail_dir, batch_size, batch_callback, full, limit, lock_timeout, socket)
    finally:
        if gc_was_enabled:
            gc.enable()


class _Prefetch(threading.Thread):
    """The database side of a sync, started before validation so MariaDB digests its
    partitions while Python validates the pillar (two cores at work): connect, take the
    sync lock (unless ``test``), open the transaction, read NOW() and the digests. Only
    reads: nothing is written before the pillar is known to be valid."""

    def __init__(self, db, test, lock_timeout):
        super().__init__(name="mailfleet_vusers-prefetch", daemon=True)
        self.db, self.test, self.lock_timeout = db, test, lock_timeout
        self.conn = None
        self.has_managed = False
        self.now = None
        self.digests = None
        self.error = None
        self._mutex = threading.Lock()
        self._done = self._abandoned = False
        self.checked = threading.Event()  # has_managed is known (or the thread failed)

    def run(self):
        try:
            self._run()
        except Exception as exc:  # noqa: BLE001
            self.error = exc  # raised again in the caller's thread
        self.checked.set()
        with self._mutex:
            self._done = True
            abandoned = self._abandoned
        if abandoned:
            self.close()

    def abandon(self):
        """The caller no longer waits (invalid pillar): close the connection now, or when
        the thread is done (it may be waiting for the lock)."""
        with self._mutex:
            self._abandoned = True
            done = self._done
        if done:
            self.close()

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass

    def _run(self):
        self.conn = connect(self.db)
        if not self.test:
            with self.conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, self.lock_timeout))
                if cur.fetchone()[0] != 1:
                    raise SyncError(f"another sync holds the lock {LOCK_NAME!r}")
        self.has_managed = managed_table_exists(self.conn)
        self.checked.set()
        if self.has_managed:
            self.conn.begin()
            with self.conn.cursor() as cur:
                cur.execute("SELECT NOW()")
                self.now = cur.fetchone()[0]
            self.digests = read_digests(self.conn)

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self


# Above this share of dirty partitions, one full read is cheaper than a filtered one.
FULL_READ_SHARE = 0.5


def _run_sync(cfg, test, host, vmail_dir, batch_size, batch_callback, full, limit, lock_timeout, socket):
    t0 = time.monotonic()
    ret = {"result": False, "test": bool(test), "changed": False, "changes": {}, "counts": {},
           "comment": "", "errors": [], "warnings": [], "warning_count": 0, "seconds": 0.0, "timings": {},
           "partitions": None}
    timings = ret["timings"]

    def lap(stage, since=[t0]):
        now_ = time.monotonic()
        timings[stage] = round(now_ - since[0], 3)
        since[0] = now_

    import pymysql

    db, db_errors = db_settings(cfg.get("db") if isinstance(cfg, dict) else None, socket)
    prefetch = None
    if not db_errors:
        prefetch = _Prefetch(db, test, lock_timeout)
        prefetch.start()
    conn = None
    moved = []
    try:
        model, errors, warnings = validate_pillar(cfg)
        lap("validate")
        errors += db_errors
        ret["warning_count"] = len(warnings)
        ret["warnings"] = warnings if full else warnings[:limit]
        if errors:
            ret["errors"] = errors
            ret["comment"] = _comment(ret, f"pillar invalid, nothing written ({len(errors)} error{'s' if len(errors) != 1 else ''}):", errors)
            ret["seconds"] = round(time.monotonic() - t0, 3)
            if prefetch is not None:
                prefetch.abandon()
                prefetch = None
            return ret
        desired, retention = desired_rows(model, host)
        exclusive = model["exclusive"]
        del model  # the rows are all that is needed from here on (memory: 100,000 mailboxes)
        lap("desired")
        want = None
        prefetch.checked.wait()
        if prefetch.has_managed:  # digests of the pillar's rows, while MariaDB digests its own
            want, part_keys = _desired_digests(desired, retention)
            lap("digest")

        try:
            prefetch.result()
        finally:
            conn = prefetch.conn
        has_managed, now = prefetch.has_managed, prefetch.now
        if not has_managed:
            if not test:
                ensure_managed_table(conn)
            conn.begin()
            with conn.cursor() as cur:
                cur.execute("SELECT NOW()")
                now = cur.fetchone()[0]
        lap("connect")
        partial = None
        if want is not None and prefetch.digests is not None:
            dirty = dirty_partitions(want, prefetch.digests, exclusive=exclusive)
            ret["partitions"] = {"total": len(set(want) | set(prefetch.digests)), "read": len(dirty)}
            if len(dirty) <= FULL_READ_SHARE * max(len(want), 1):
                partial = dirty
        if partial is not None:
            have = prefetch.digests
            counts = {p: digest_counts(have[p]) if p in have else {} for p in partial}
            current, managed = read_partitions(conn, partial, counts=counts, keys=part_keys)
            keep = set(partial)
            for t in TABLES:
                keep.update(partition_of(k) for k in current[t])
            keep.update(partition_of(k) for _, k in managed)
            part_desired = {t: {} for t in TABLES}
            for p in keep:
                for t, ks in part_keys.get(p, {}).items():
                    rows, sub = desired[t], part_desired[t]
                    for k in ks:
                        sub[k] = rows[k]
            lap("read")
            diff = compute_diff(part_desired, current, managed, now, exclusive=exclusive, retention=retention)
            if diff.purge["domain"]:
                # whether a domain may go depends on every row that stays: read them all
                partial = None
        if partial is None:
            current, managed = read_state(conn, has_managed or not test)
            lap("read")
            diff = compute_diff(desired, current, managed, now, exclusive=exclusive, retention=retention)
        lap("diff")
        notes = []
        if test or diff.empty:
            conn.rollback()
        else:
            notes = apply_diff(conn, diff, vmail_dir=vmail_dir, batch_size=batch_size, batch_callback=batch_callback,
                               moved=moved)
            lap("write")
    except (pymysql.Error, SyncError, OSError) as exc:
        if conn is not None:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001
                pass  # connection gone: the server rolls the transaction back itself
        ret["errors"] = [f"database: {exc}"]
        if moved:  # inactive mailboxes' maildirs, archived before the failure: say so
            ret["errors"] += [f"maildir already archived (its row stays, inactive): {m}" for m in moved]
        head = ("sync failed, transaction rolled back, nothing changed in the database:" if conn is not None
                else "cannot connect to the database, nothing written:")
        ret["comment"] = _comment(ret, head, ret["errors"])
        ret["seconds"] = round(time.monotonic() - t0, 3)
        return ret
    finally:
        if prefetch is not None:
            prefetch.join()
            prefetch.close()

    ret["result"] = True
    ret["changed"] = not diff.empty
    ret["changes"] = summarize(diff, limit=limit, full=full)
    if notes:
        ret["changes"].setdefault("notes", []).extend(notes if full else notes[:limit])
    ret["counts"] = diff.counts()
    what = describe(diff)
    if test:
        head = f"test mode, nothing written; would apply: {what}" if not diff.empty else "no changes"
    else:
        head = f"applied in one transaction: {what}" if not diff.empty else "no changes"
    ret["seconds"] = round(time.monotonic() - t0, 3)
    stages = ", ".join(f"{stage} {secs} s" for stage, secs in timings.items())
    if ret["partitions"]:
        stages += f"; {ret['partitions']['read']} of {ret['partitions']['total']} domain partitions read"
    ret["comment"] = _comment(ret, f"{head} ({ret['seconds']} s)", [f"stages: {stages}"])
    return ret


def _comment(ret, head, lines):
    out = [head] + [f"  {line}" for line in lines]
    if ret["warning_count"]:
        shown = ret["warnings"]
        more = ret["warning_count"] - len(shown)
        out.append(f"{ret['warning_count']} warning{'s' if ret['warning_count'] != 1 else ''}:")
        out += [f"  {w}" for w in shown]
        if more > 0:
            out.append(f"  ... and {more} more")
    return "\n".join(out)


# ------------------------------------------------------------------------ Salt glue

# Only these are Salt functions; the helpers above stay plain Python (the loader honours
# __load__).
__load__ = ("validate", "diff", "sync")

# MariaDB's socket where the pillar names none (salt/mail/parameters: lookup.mysql_socket)
_OS_SOCKET = {"FreeBSD": "/var/run/mysql/mysql.sock"}


def _pillar_cfg(mailfleet):
    if mailfleet is not None:
        return mailfleet
    # 3008 masks values returned by pillar.get inside execution modules: read __pillar__.
    return __pillar__.get("mailfleet")


def _host(host_filter):
    return __opts__.get("id") if host_filter else None


def _socket(socket):
    if socket:
        return socket
    return _OS_SOCKET.get(__grains__.get("os_family"), DEFAULT_SOCKET)


def validate(mailfleet=None):
    """
    Validate the ``mailfleet`` pillar (or the ``mailfleet`` mapping given) without
    touching the database. Returns ``{'result', 'errors', 'warnings'}``; every message
    names its pillar path.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.validate
    """
    cfg = _pillar_cfg(mailfleet)
    _, errors, warnings = validate_pillar(cfg)
    errors += validate_db(cfg.get("db") if isinstance(cfg, dict) else None)
    return {"result": not errors, "errors": errors, "warnings": warnings}


def diff(full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, socket=None, mailfleet=None):
    """
    Show what a sync would change, writing nothing: counts plus the first 10 items per
    table and kind (``full=True``: every item).

    full
        list every item instead of the first 10
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base, for the archive paths of purged mailboxes (default /var/vmail)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: the OS's)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt 'mail01.lab.test' mailfleet_vusers.diff
        salt 'mail01.lab.test' mailfleet_vusers.diff full=True
    """
    return sync(test=True, full=full, host_filter=host_filter, vmail_dir=vmail_dir, socket=socket,
                mailfleet=mailfleet)


def sync(test=None, full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, batch_size=1000, socket=None,
         mailfleet=None, batch_callback=None):
    """
    Bring the PostfixAdmin tables in line with the ``mailfleet`` pillar: validate
    everything first (any error: nothing is written, every error is listed with its
    pillar path), then inserts, updates, deactivations and retention purges in ONE
    transaction, in batches. ``test=True`` (or the minion running in test mode): the
    exact diff, nothing written.

    Returns ``result``, ``changed``, ``changes`` (per table and kind: count and first 10
    items), ``counts``, ``comment``, ``errors``, ``warnings`` (first 10),
    ``warning_count``, ``seconds`` and ``timings``.

    test
        only compute the diff (default: the minion's ``test`` option)
    full
        list every changed item instead of the first 10 per kind
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base; purged mailboxes are moved to ``<vmail_dir>/.archive/`` (default
        /var/vmail)
    batch_size
        rows per executemany batch (default 1000)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: the OS's)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.sync
        salt '*mail*' mailfleet_vusers.sync test=True
    """
    if test is None:
        test = bool(__opts__.get("test", False))
    ret = run_sync(_pillar_cfg(mailfleet), test=test, host=_host(host_filter), vmail_dir=vmail_dir,
                   batch_size=int(batch_size), batch_callback=batch_callback, full=full, socket=_socket(socket))
    if not ret["result"]:
        __context__["retcode"] = 1
    return ret
