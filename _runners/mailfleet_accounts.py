"""
Compromised accounts and the mail queue (issue 6), decided on the master.

The ``mailfleet_watch`` engine counts the outbound volume of every SASL user per window
(_utils/mailfleet_logcount.py; pillar ``mailfleet:defense:thresholds:outbound``, default
200 messages or 500 recipients per 3600 s) and lists the users over it in the ``outbound``
part of its ``mailfleet/abuse/report``; its queue thread adds a ``queue`` part when the
deferred queue goes past ``mailfleet:defense:queue`` (default 200 messages or the oldest
4 h old). ``mailfleet_defense.report`` hands both here BEFORE any IP-level decision: a
compromised account is the usual cause of a listing, and its sender's address is often a
legitimate client's.

Compromised account (untrusted input: user names validated, at most ``max_users`` per
report, the report's host must be the sending minion, checked by mailfleet_defense):

1. first crossing -> ``hold``: on every fleet host (``mailfleet_defense:target``) the user's
   new mail is accepted onto the hold queue (Postfix HOLD) and what it has in the queue is
   put on hold. Deferred, never bounced; a false positive loses nothing.
2. reported again while held (it sent another threshold's worth) -> ``refuse``: new mail is
   refused with ``450 4.7.1`` (the client keeps it), so the hold queue does not fill up.
3. ``salt-run mailfleet_accounts.release user=<u>`` (also ``mailfleet_defense.release``): the
   hold ends in the ledger and on every host, the held messages are released and delivered.

Every hold, escalation and release is a row of table ``sasl_holds`` in the ledger (reason,
reporting minion, times); the ``mailfleet_bans`` ext_pillar hands the holds in force to
every host as pillar ``mailfleet_sasl_holds`` and the state ``mail.sasl_hold`` (highstate,
schedule) makes a host that missed the push catch up, also after a restart.

Alerts through ``mailfleet_alert.send`` (deduplicated, rate-limited): ``account_held``,
``account_refused``, ``account_released``, ``queue_deferred`` (and ``queue_cleared``).

Runners: ``holds`` (the ledger), ``hold`` (by hand), ``release``, ``reconcile`` (push the ledger's holds to every
host now).
"""
import json
import logging
import threading
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_events
import mailfleet_ledger
import mailfleet_account_policy as _policy  # the report check, served domains, the cap, the actions
from mailfleet_sasl_user import valid_user as _valid_user  # salt://_utils: the hosts check the same way

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_accounts"

# Holds in force that one reporter may have started (master config
# mailfleet_accounts:max_holds_per_reporter): a compromised host cannot fill every host's map.
MAX_HOLDS_PER_REPORTER = 100
_LOCK = threading.Lock()


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("hold", "release", "holds", "reconcile", "outbound", "queue")


def __virtual__():
    return __virtualname__


# --- pure ------------------------------------------------------------------------------------


# --- ledger ----------------------------------------------------------------------------------

class Holds(mailfleet_ledger.Tables):
    """Table ``sasl_holds`` in the ledger file: one row per hold episode of a user."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS sasl_holds (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user TEXT NOT NULL, mode TEXT NOT NULL, reporter TEXT NOT NULL, reason TEXT NOT NULL,
        created REAL NOT NULL, updated REAL NOT NULL,
        released REAL, released_by TEXT);
    CREATE INDEX IF NOT EXISTS sasl_holds_user ON sasl_holds(user, released);
    CREATE TABLE IF NOT EXISTS sasl_holds_seq (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
    """

    def bump(self):
        """The next sequence number of the hold map (in the caller's write transaction):
        pushes can arrive out of order, a host applies none older than what it has."""
        self.db.execute("INSERT INTO sasl_holds_seq(id, seq) VALUES (1, 1)"
                        " ON CONFLICT(id) DO UPDATE SET seq = seq + 1")
        return self.seq()

    def seq(self):
        row = self.db.execute("SELECT seq FROM sasl_holds_seq WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def current(self):
        return {r["user"]: r["mode"] for r in self.db.execute(
            "SELECT user, mode FROM sasl_holds WHERE released IS NULL ORDER BY id")}

    def apply(self, actions, reporter, now):
        for user, mode, info in actions:
            reason = json.dumps(info, sort_keys=True)
            if mode == "hold":
                self.db.execute("INSERT INTO sasl_holds(user, mode, reporter, reason, created, updated)"
                                " VALUES (?,?,?,?,?,?)", (user, mode, reporter, reason, now, now))
            else:
                self.set_mode(user, mode, info, now)

    def set_mode(self, user, mode, info, now):
        """Change the mode of ``user``'s hold in force (hold <-> refuse)."""
        self.db.execute("UPDATE sasl_holds SET mode=?, reason=?, updated=? WHERE user=? AND released IS NULL",
                        (mode, json.dumps(info, sort_keys=True), now, user))

    def started_by(self, reporter):
        return self.db.execute("SELECT COUNT(*) FROM sasl_holds WHERE reporter=? AND released IS NULL",
                               (reporter,)).fetchone()[0]

    def release(self, user, now, who):
        return self.db.execute("UPDATE sasl_holds SET released=?, released_by=? WHERE user=? AND released IS NULL",
                               (now, who, user)).rowcount

    def rows(self, include_all=False):
        where = "" if include_all else " WHERE released IS NULL"
        return [dict(r) for r in self.db.execute(f"SELECT * FROM sasl_holds{where} ORDER BY id")]


def pillar_holds(db):
    """{user: mode} in force, from an open sqlite connection (for the ext_pillar)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sasl_holds'").fetchone():
        return {}
    return {r[0]: r[1] for r in db.execute("SELECT user, mode FROM sasl_holds WHERE released IS NULL ORDER BY id")}


# --- Salt glue -------------------------------------------------------------------------------

def _ledger_path():
    return mailfleet_ledger.path(__opts__)


def _target():
    conf = __opts__.get("mailfleet_defense") or {}
    return conf.get("target", "*"), conf.get("tgt_type", "glob")


def _alert(kind, subject, message, details=None, severity="warning"):
    return mailfleet_events.alert(__salt__, "mailfleet_accounts", kind, subject, message, details, severity)


def _push(holds, release=None, timeout=60, seq=None):
    """mailfleet_sasl_hold.sync on every fleet host, waited for: {host: result}."""
    import salt.client
    tgt, tgt_type = _target()
    client = salt.client.get_local_client(mopts=__opts__)
    kwarg = {"holds": holds}
    if seq is not None:
        kwarg["seq"] = seq
    if release:
        kwarg["release"] = release
    try:
        return client.cmd(tgt, "mailfleet_sasl_hold.sync", kwarg=kwarg, tgt_type=tgt_type, timeout=timeout)
    except Exception as exc:  # noqa: BLE001
        log.exception("mailfleet_accounts: push failed")
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


def _summary(ret):
    out = {}
    for host, res in (ret or {}).items():
        if isinstance(res, dict) and res.get("result") is True:
            out[host] = {k: v for k, v in (res.get("changes") or {}).items() if k != "map"} or "ok"
        else:
            out[host] = f"failed: {str(res)[:200]}"
    return out


def _served_domains(minion):
    """The domains the master's own data gives ``minion`` (its pillar as the master compiled
    it last, from the minion data cache), or None when unknown. Never the minion's word."""
    import salt.cache
    try:
        pillar = salt.cache.Cache(__opts__).fetch("pillar", minion)
    except Exception:  # noqa: BLE001
        log.exception("mailfleet_accounts: minion data cache")
        return None
    if not isinstance(pillar, dict) or not pillar:
        return None
    domains = (pillar.get("mailfleet") or {}).get("domains") or {}
    return set(domains) if isinstance(domains, dict) else set()


def _cap():
    conf = __opts__.get("mailfleet_accounts") or {}
    cap = conf.get("max_holds_per_reporter", MAX_HOLDS_PER_REPORTER)
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else MAX_HOLDS_PER_REPORTER


def outbound(minion, payload):
    """
    The reactor path (called by mailfleet_defense.report with a checked report):
    hold / refuse the users over the threshold. Returns what was done.

    ``payload`` is a report already checked by mailfleet_defense.report; calling it by hand
    acts as that host's report would.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_accounts.outbound mail01.lab.test '{"outbound": []}'
    """
    users, refused = _policy.check_outbound(payload)
    served = _served_domains(minion) if users else set()
    if users and served is None:
        log.error("mailfleet_accounts: no domain data for %s in the master's cache: its report holds no one", minion)
    users, foreign = _policy.served_only(users, served)
    refused += foreign
    for item, why in refused:
        log.warning("mailfleet_accounts: outbound entry %s from %s refused: %s", item, minion, why)
    capped = []
    now = time.time()
    actions, pushed = [], {}
    if users:
        with _LOCK:
            led = Holds(_ledger_path())
            try:
                with led:
                    current = led.current()
                    actions, capped = _policy.cap_new_holds(_policy.decide(users, current), led.started_by(minion),
                                                            _cap(), in_force=len(current))
                    led.apply(actions, minion, now)
                    seq = led.bump() if actions else None
                    holds = led.current()
            finally:
                led.close()
            pushed = _summary(_push(holds, seq=seq)) if actions else {}
    refused += capped
    if foreign or capped:
        _alert("report_refused", minion, f"{minion} reported {len(foreign) + len(capped)} SASL users the master "
               f"refused to hold: {'; '.join(f'{u} ({why})' for u, why in (foreign + capped)[:5])}",
               details={"host": minion, "refused": [list(r) for r in (foreign + capped)[:50]]}, severity="critical")
    if not actions:
        return {"held": [], "refused": [], "invalid": [list(r) for r in refused]}
    for user, mode, info in actions:
        what = ("accepted onto the hold queue (deferred, not bounced) until released"
                if mode == "hold" else "refused with 450 4.7.1 (it kept sending while held)")
        _alert(f"account_{'held' if mode == 'hold' else 'refused'}", user,
               f"SASL user {user} sent {info['messages']} messages / {info['recipients']} recipients in "
               f"{info['window']} s through {minion}: its outbound mail is {what}. "
               f"Release: salt-run mailfleet_accounts.release user={user}",
               details=dict(info, host=minion, mode=mode, hosts=pushed), severity="critical")
    log.warning("mailfleet_accounts: %s", ", ".join(f"{u} -> {m}" for u, m, _ in actions) or "no change")
    return {"held": [u for u, m, _ in actions if m == "hold"], "refused": [u for u, m, _ in actions if m == "refuse"],
            "hosts": pushed, "invalid": [list(r) for r in refused]}


def queue(minion, payload):
    """
    The queue part of a report: alert (deduplicated by mailfleet_alert).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_accounts.queue mail01.lab.test '{"queue": {}}'
    """
    try:
        q = _policy.check_queue(payload)
    except ValueError as exc:
        log.warning("mailfleet_accounts: queue report from %s refused: %s", minion, exc)
        return {"invalid": str(exc)}
    if q is None:
        return None
    if q["state"] == "over":
        _alert("queue_deferred", minion,
               f"{minion}: {q['deferred']} deferred messages, the oldest {q['oldest'] // 60} min old "
               f"(thresholds {q['thresholds'].get('deferred')} / {q['thresholds'].get('age')} s); "
               f"{q['hold']} on hold", details=dict(q, host=minion))
    else:
        _alert("queue_cleared", minion, f"{minion}: deferred queue back under the thresholds "
               f"({q['deferred']} deferred)", details=dict(q, host=minion), severity="info")
    return q


def hold(user, mode="hold", reason="held by the postmaster"):
    """Hold ``user`` by hand on every host (a customer reports a phished account, say):
    ``mode=hold`` accepts its new mail onto the hold queue, ``mode=refuse`` answers 450 4.7.1.
    Recorded in the ledger like a reported hold (reporter ``runner``); ends with ``release``.

    CLI Example::

        salt-run mailfleet_accounts.hold user=alice@example-a.test reason="ticket 4711"
    """
    user = _valid_user(user)
    if mode not in ("hold", "refuse"):
        raise ValueError(f"mode must be hold or refuse, not {mode!r}")
    reason = str(reason)[:200]
    now = time.time()
    with _LOCK:
        led = Holds(_ledger_path())
        try:
            with led:
                current = led.current()
                if current.get(user) == mode:
                    return {"user": user, "mode": mode, "changed": False, "hosts": {}}
                info = {"reason": reason, "by": "runner"}
                if user not in current:
                    if len(current) >= _policy.fleet_limit():
                        raise ValueError(f"the fleet already has {len(current)} holds in force (max "
                                         f"{_policy.fleet_limit()}, what a host's hold map takes): release some first")
                    led.apply([(user, "hold", info)], "runner", now)
                if mode != "hold" or user in current:  # the mode of the row in force
                    led.set_mode(user, mode, info, now)
                seq = led.bump()
                holds_now = led.current()
        finally:
            led.close()
        pushed = _summary(_push(holds_now, seq=seq))
    _alert(f"account_{'held' if mode == 'hold' else 'refused'}", user,
           f"SASL user {user} {'held' if mode == 'hold' else 'refused'} by the postmaster ({reason}). "
           f"Release: salt-run mailfleet_accounts.release user={user}",
           details={"mode": mode, "reason": reason, "hosts": pushed}, severity="warning")
    return {"user": user, "mode": mode, "changed": True, "hosts": pushed}


def release(user, who="runner"):
    """
    End the hold of ``user`` in the ledger and on every host; its held mail is delivered.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_accounts.release alice@example-a.test
    """
    user = _valid_user(user)
    now = time.time()
    with _LOCK:
        led = Holds(_ledger_path())
        try:
            with led:
                n = led.release(user, now, who)
                seq = led.bump()
                holds = led.current()
        finally:
            led.close()
        pushed = _summary(_push(holds, release=[user], timeout=120, seq=seq))
    if n:
        _alert("account_released", user, f"outbound mail of SASL user {user} released by {who}; held messages "
               "delivered", details={"hosts": pushed}, severity="info")
    return {"user": user, "released": n, "hosts": pushed}


def reconcile():
    """
    Push the ledger's holds to every host now (the hosts' schedule does it anyway).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_accounts.reconcile
    """
    led = Holds(_ledger_path())
    try:
        holds, seq = led.current(), led.seq()
    finally:
        led.close()
    return {"holds": holds, "seq": seq, "hosts": _summary(_push(holds, seq=seq))}


def holds(all=False):
    """
    The ledger: holds in force (``all=True``: every episode, released ones too).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_accounts.holds all=True
    """
    led = Holds(_ledger_path())
    try:
        rows = led.rows(include_all=bool(all))
    finally:
        led.close()
    for r in rows:
        r["reason"] = json.loads(r["reason"])
        for k in ("created", "updated", "released"):
            if r.get(k):
                r[k] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[k]))
    return rows
