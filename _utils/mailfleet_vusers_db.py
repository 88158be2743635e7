"""
The database side of the virtual-user sync: MariaDB settings and connection, the ownership
side table ``mailfleet_managed`` (PostfixAdmin's own tables are never altered), reading the
rows, the partition digests that let a no-op sync read no rows at all, and applying a diff
in batches inside the caller's one transaction (archiving purged maildirs, never deleting
them). One job of the sync; no Salt.
"""
import datetime
import logging
import os
import shutil

from mailfleet_vusers_rows import (  # salt://_utils
    DEFAULT_SOCKET,
    DEFAULT_VMAIL,
    INSERT_COLS,
    KEY,
    MANAGED_COLS,
    MANAGED_TABLE,
    TABLES,
)
from mailfleet_pillar import PREFIX  # salt://_utils

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers_db"


def __virtual__():
    return __virtualname__


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
