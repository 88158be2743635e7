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

This file drives one sync (validate, read, diff, apply, summarise); the parts are
``mailfleet_pillar`` (validation), ``mailfleet_vusers_rows``, ``mailfleet_vusers_diff`` and
``mailfleet_vusers_db``, all in ``_utils`` and imported plainly. The Salt functions
(``_modules/mailfleet_vusers.py``) are thin glue.

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

import gc
import logging
import threading
import time

from mailfleet_vusers_db import (  # salt://_utils
    SyncError,
    _desired_digests,
    apply_diff,
    connect,
    db_settings,
    digest_counts,
    dirty_partitions,
    ensure_managed_table,
    managed_table_exists,
    partition_of,
    read_digests,
    read_partitions,
    read_state,
)
from mailfleet_vusers_diff import (  # salt://_utils
    compute_diff,
    describe,
    summarize,
)
from mailfleet_vusers_rows import (  # salt://_utils
    DEFAULT_VMAIL,
    LOCK_NAME,
    SUMMARY_LIMIT,
    TABLES,
    desired_rows,
)
from mailfleet_pillar import validate_pillar  # salt://_utils

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers_sync"


def __virtual__():
    return __virtualname__


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
