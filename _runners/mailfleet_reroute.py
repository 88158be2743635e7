"""
A host's outbound mode, decided from its DNSBL listings (issue 6): the dnsbl reactor hands
every ``mailfleet/dnsbl/transition`` event (mailfleet_watch engine on a mail host) to
:func:`dnsbl`; this runner treats it as untrusted input, records it, decides and acts.

1. ``check_event``: a bounded mapping whose ``host`` is the minion that sent it (the ``id``
   Salt put on the event); each transition's address must be one of THAT host's addresses
   (its ``ipv4``/``ipv6`` grains and ``mailfleet:dnsbl:ips`` in the master's minion data
   cache), its zone a DNS name, its state listed/cleared/unknown. Anything else is refused.
2. The ledger (the same sqlite file as the bans, ``mailfleet_ledger``): table
   ``dnsbl_listings`` (one row per listing episode of an address on a zone: listed, cleared,
   codes, reporter) and ``outbound`` (each host's mode: ``normal``, ``relay`` through a
   peer, or ``hold``; the peer that admits it; since when; why).
3. :func:`plan` (pure): a host with an open listing leaves outbound service. It relays through
   a clean peer (a fleet mail host with no open listing, not opted out with
   ``mailfleet:dnsbl:peer: false``, the one it already uses if still clean, else the least
   loaded), or is held when there is none. A host with no open listing is normal. ``unknown``
   changes nothing (a listed address stays out of service until it is seen cleared).
4. Acting, in an order that never bounces mail: the peer admits the host (its mynetworks
   gain the host's addresses: pillar ``mailfleet_outbound:admit``) BEFORE the host relays
   through it; the host returns to direct delivery BEFORE the peer drops it. Each step is
   recorded in the ledger first, then ``state.sls mail.dnsbl`` runs on that host: the
   ``mailfleet_bans`` ext_pillar hands the ledger's mode to it, the Postfix template renders
   it (relayhost / retry transport + extended queue lifetime / mynetworks), postconf checks
   it, Postfix reloads and the queue is flushed. The same state in every highstate and on a
   schedule makes a host that was cut off catch up (level-triggered).
5. Alerts through ``mailfleet_alert.send`` (webhook, mail, event; deduplicated and
   rate-limited): ``dnsbl_listed``, ``dnsbl_cleared``, ``dnsbl_unknown``, ``outbound_failed``,
   ``outbound_held`` (:func:`check`, from the master schedule: a host held over 24 h).

Held mail is never bounced: ``default_transport = retry:4.7.1 ...`` defers it (a flush does
not let it out, unlike ``defer_transports``), and while held (and for
``grace`` after, while the backlog drains) ``maximal_queue_lifetime`` and
``bounce_queue_lifetime`` are ``hold_lifetime`` (100 days, Postfix's ceiling for them).

Master config (defaults)::

    mailfleet_reroute:
      hold_lifetime: 100d
      grace: 172800          # seconds the extended lifetime stays after a hold ends
      held_alert: 86400      # alert when a host is held longer than this
      apply_timeout: 300     # seconds for state.sls mail.dnsbl on one host

Runners (salt-run mailfleet_reroute.*): ``dnsbl`` (the reactor's), ``status`` (modes and open listings), ``set_mode``
(postmaster override: ``salt-run mailfleet_reroute.set_mode mail01.lab.test normal``),
``reconcile`` (apply the ledger's modes on every host), ``check`` (schedule).
"""
import ipaddress
import json
import logging
import os
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_inventory
import mailfleet_report
import mailfleet_events
import mailfleet_ledger
import mailfleet_reroute_plan as _plan_lib  # the event check, the plan and its steps
from mailfleet_outbound_mode import DEFAULTS as OUTBOUND_DEFAULTS
from mailfleet_outbound_mode import admit_entry, outbound_pillar, relayhost  # noqa: F401  (names of this runner too)

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_reroute"

TAG_REFUSED = "mailfleet/outbound/refused"
TAG_DNSBL = "mailfleet/dnsbl/transition"
DEFAULTS = dict(OUTBOUND_DEFAULTS, held_alert=86400, apply_timeout=300, sls="mail.dnsbl")


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("dnsbl", "status", "set_mode", "reconcile", "check")


class _Lock:
    """One decision at a time, fleet-wide on this master: an flock on ``<ledger>.reroute.lock``.
    (A module-level threading.Lock is not enough: Salt loads a runner module afresh for each
    reactor job, so every job had its own; two reactions converged at once in the lab.) flock
    also serialises the reactor's threads with runner CLIs (set_mode, reconcile)."""

    def __init__(self, path):
        self.path = path + ".reroute.lock"

    def __enter__(self):
        import fcntl
        self.fh = open(self.path, "a", encoding="utf-8")
        os.chmod(self.path, 0o600)
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_):
        import fcntl
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def __virtual__():
    return __virtualname__


# --- pure: validation and planning ---------------------------------------------------------


# relayhost, admit_entry, outbound_pillar: _utils/mailfleet_outbound_mode.py (the ext_pillar uses them too)


# --- the ledger's tables -------------------------------------------------------------------

class Store(mailfleet_ledger.Tables):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS dnsbl_listings (
        id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, ip TEXT NOT NULL,
        zone TEXT NOT NULL, codes TEXT NOT NULL, why TEXT NOT NULL, listed REAL NOT NULL,
        cleared REAL, reporter TEXT NOT NULL);
    CREATE INDEX IF NOT EXISTS dnsbl_open ON dnsbl_listings(host, ip, zone, cleared);
    CREATE TABLE IF NOT EXISTS outbound (
        host TEXT PRIMARY KEY, mode TEXT NOT NULL, peer TEXT, relayhost TEXT, admit_peer TEXT,
        ips TEXT, since REAL NOT NULL, reason TEXT NOT NULL, updated REAL NOT NULL,
        held_since REAL, hold_ended REAL);
    CREATE TABLE IF NOT EXISTS outbound_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, time REAL NOT NULL,
        action TEXT NOT NULL, peer TEXT, reason TEXT NOT NULL, result TEXT);
    """

    def record(self, host, t, now):
        """Apply one checked transition to the listings; True when it changed anything."""
        open_row = self.db.execute("SELECT id FROM dnsbl_listings WHERE host=? AND ip=? AND zone=?"
                                   " AND cleared IS NULL", (host, t["ip"], t["zone"])).fetchone()
        if t["state"] == "listed" and not open_row:
            self.db.execute("INSERT INTO dnsbl_listings(host, ip, zone, codes, why, listed, reporter)"
                            " VALUES (?,?,?,?,?,?,?)", (host, t["ip"], t["zone"], json.dumps(t["codes"]),
                                                         t["why"], now, host))
            return True
        if t["state"] == "cleared" and open_row:
            self.db.execute("UPDATE dnsbl_listings SET cleared=? WHERE id=?", (now, open_row["id"]))
            return True
        return False

    def listed_hosts(self):
        return {r[0] for r in self.db.execute("SELECT DISTINCT host FROM dnsbl_listings WHERE cleared IS NULL")}

    def open_listings(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM dnsbl_listings WHERE cleared IS NULL ORDER BY id")]

    def rows(self):
        return [dict(r) for r in self.db.execute("SELECT * FROM outbound ORDER BY host")]

    def current(self):
        return {r["host"]: (r["mode"], r["peer"]) for r in self.rows()}

    def set_admit(self, host, peer, ips, now, reason):
        self._ensure(host, now, reason)
        self.db.execute("UPDATE outbound SET admit_peer=?, ips=?, updated=? WHERE host=?",
                        (peer, json.dumps(sorted(ips)), now, host))

    def set_mode(self, host, mode, peer, relay, now, reason):
        row = self._ensure(host, now, reason)
        held_since = row["held_since"]
        hold_ended = row["hold_ended"]
        if mode == "hold" and row["mode"] != "hold":
            held_since = now
        if mode != "hold" and row["mode"] == "hold":
            hold_ended, held_since = now, None
        self.db.execute("UPDATE outbound SET mode=?, peer=?, relayhost=?, since=?, reason=?, updated=?,"
                        " held_since=?, hold_ended=? WHERE host=?",
                        (mode, peer, relay, now if (mode, peer) != (row["mode"], row["peer"]) else row["since"],
                         reason, now, held_since, hold_ended, host))

    def _ensure(self, host, now, reason):
        self.db.execute("INSERT OR IGNORE INTO outbound(host, mode, since, reason, updated)"
                        " VALUES (?, 'normal', ?, ?, ?)", (host, now, reason, now))
        return self.db.execute("SELECT * FROM outbound WHERE host=?", (host,)).fetchone()

    def history(self, host, action, peer, reason, result, now):
        self.db.execute("INSERT INTO outbound_history(host, time, action, peer, reason, result)"
                        " VALUES (?,?,?,?,?,?)", (host, now, action, peer, reason, result))


# --- Salt glue -----------------------------------------------------------------------------

def _conf():
    conf = dict(DEFAULTS)
    conf.update(__opts__.get("mailfleet_reroute") or {})
    return conf


def _ledger_path():
    return mailfleet_ledger.path(__opts__)


def _cache():
    import salt.cache
    return salt.cache.Cache(__opts__)


def _fleet_data():
    """{minion: (grains, pillar)} of the mail hosts in the master's minion data cache."""
    cache = _cache()
    out = {}
    for mid in set(cache.list("grains") or []) | set(cache.list("pillar") or []):
        pillar = cache.fetch("pillar", mid) or {}
        if isinstance(pillar.get("mailfleet"), dict):
            out[mid] = (cache.fetch("grains", mid) or {}, pillar)
    return out


def host_addresses(grains, pillar):
    ips = list((((pillar or {}).get("mailfleet") or {}).get("dnsbl") or {}).get("ips") or [])
    ips += list((grains or {}).get("ipv4") or []) + list((grains or {}).get("ipv6") or [])
    out = []
    for a in ips:
        try:
            ip = ipaddress.ip_address(_plan_lib.norm_ip(str(a)))
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified) and str(ip) not in out:
            out.append(str(ip))
    return out


def _client():
    import salt.client
    return salt.client.get_local_client(mopts=__opts__)


def _apply(host, conf, outbound=None):
    """state.sls mail.dnsbl on one host, waited for: (ok, summary).

    ``outbound``: the host's mailfleet_outbound as the ledger holds it now, passed as pillar
    so the run renders exactly what was decided (the lab showed runs right after a ledger
    change rendering the previous mode from a freshly compiled pillar now and then)."""
    kwarg = {"queue": True}
    if outbound is not None:
        kwarg["pillar"] = {"mailfleet_outbound": outbound}
    try:
        ret = _client().cmd([host], "state.sls", arg=[conf["sls"]], kwarg=kwarg,
                            tgt_type="list", timeout=int(conf["apply_timeout"]))
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"[:300]
    res = ret.get(host)
    if not isinstance(res, dict):
        return False, f"no answer or error: {str(res)[:300]}"
    bad = [v.get("comment", "")[:200] for v in res.values() if isinstance(v, dict) and v.get("result") is False]
    return (not bad), ("; ".join(bad) if bad else f"{len(res)} states ok")


def _alert(kind, subject, message, details=None, severity="warning"):
    return mailfleet_events.alert(__salt__, "mailfleet_reroute", kind, subject, message, details, severity)


def _fire(tag, data):
    mailfleet_events.fire(__opts__, tag, data)


def inventory(fleet):
    """The master-owned inventory (pillar mailfleet:inventory) as the fleet's cached pillars
    carry it: {host: entry}; bad entries are logged and left out."""
    hosts, problems = mailfleet_inventory.parse(mailfleet_inventory.from_pillars({h: p for h, (_g, p) in fleet.items()}))
    for problem in problems:
        log.error("mailfleet_reroute: %s", problem)
    return hosts


def _check_claims(fleet, inv):
    """Alert for every host whose grains name addresses its inventory entry does not."""
    for host, (g, _p) in sorted(fleet.items()):
        if host in inv:
            extra = mailfleet_inventory.unlisted(inv[host], list(g.get("ipv4") or []) + list(g.get("ipv6") or []))
            if extra:
                _alert("inventory_mismatch", host, f"{host} reports addresses its inventory entry does not list: "
                       f"{', '.join(extra[:10])} (mailfleet:inventory decides what peers admit; grains do not)",
                       {"host": host, "unlisted": extra[:50], "inventory": inv[host]["addresses"]})


def _converge(store, fleet, conf, reason, now):
    """Plan from the ledger and act step by step; returns the steps with their results.

    What peers act on comes from the inventory: a host without an entry is no one's peer
    and is admitted nowhere (it holds when listed)."""
    inv = inventory(fleet)
    _check_claims(fleet, inv)
    # an isolated host (mailfleet_trust.isolate) is no one's peer and relays through no one
    keys = mailfleet_report.KeyStore(mailfleet_report.key_dir(__opts__, _ledger_path()))
    isolated = {h for h in fleet if keys.revoked(h)}
    fleet_info = {h: {"peer_ok": h not in isolated and h in inv
                      and (((p.get("mailfleet") or {}).get("dnsbl") or {}).get("peer", True) is not False)
                      and mailfleet_inventory.relay_address(inv[h]) is not None}
                  for h, (g, p) in fleet.items()}
    # a listed host that is not in the inventory cannot be admitted anywhere: it holds
    for h in fleet:
        if h not in inv:
            fleet_info.setdefault(h, {})["no_relay"] = True
    current = store.current()
    admits = {r["host"]: r["admit_peer"] for r in store.rows() if r["admit_peer"]}
    desired = _plan_lib.plan(fleet_info, set(store.listed_hosts()) - isolated, current)
    done = []
    failed_peers = set()
    for action, host, peer in _plan_lib.steps(desired, current, admits):
        if host not in fleet:
            continue  # a host the master no longer knows: nothing to apply there
        g, p = fleet[host]
        if action == "admit":
            store.set_admit(host, peer, inv[host]["addresses"], now, reason)
            ok, summary = _apply(peer, conf, outbound_pillar(peer, store.rows(), now, conf))
            if not ok:
                failed_peers.add(peer)
                store.set_admit(host, None, [], now, reason)
        elif action == "relay":
            if peer in failed_peers:
                action, peer = "hold", None
                store.set_mode(host, "hold", None, None, now, f"{reason}; peer refused: {summary}")
            else:
                store.set_mode(host, "relay", peer, relayhost(mailfleet_inventory.relay_address(inv[peer])), now, reason)
            ok, summary = _apply(host, conf, outbound_pillar(host, store.rows(), now, conf))
        elif action in ("normal", "hold"):
            store.set_mode(host, action, None, None, now, reason)
            ok, summary = _apply(host, conf, outbound_pillar(host, store.rows(), now, conf))
        else:  # unadmit: the host no longer relays through that peer
            row = {r["host"]: r for r in store.rows()}.get(host) or {}
            if row.get("admit_peer") == peer and not (row.get("mode") == "relay" and row.get("peer") == peer):
                store.set_admit(host, None, [], now, reason)
            ok, summary = _apply(peer, conf, outbound_pillar(peer, store.rows(), now, conf))
        store.history(host, action, peer, reason, summary if ok else f"FAILED: {summary}", now)
        done.append({"action": action, "host": host, "peer": peer, "ok": ok, "result": summary})
        if not ok:
            _alert("outbound_failed", f"{host} {action}",
                   f"mailfleet could not apply outbound step {action} (host {host}, peer {peer}): {summary}",
                   {"host": host, "action": action, "peer": peer}, "critical")
    return done


def dnsbl(minion=None, payload=None):
    """
    Decide on one DNSBL transition event (the dnsbl reactor calls this with the raw event).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_reroute.dnsbl mail02.lab.test '{...}'  # what reactor/dnsbl.sls does
    """
    conf = _conf()
    now = time.time()
    try:
        # the signature names the sender; the event's minion id proves nothing (issue 13)
        minion, payload = mailfleet_report.check(__opts__, _ledger_path(), TAG_DNSBL, payload, minion)
    except mailfleet_report.Refused as exc:
        return mailfleet_events.refuse_report(globals().get("__salt__"), _fire, "mailfleet_reroute", "DNSBL event",
                                              TAG_DNSBL, TAG_REFUSED, minion, exc)
    fleet = _fleet_data()
    g, p = fleet.get(minion, ({}, {})) if isinstance(minion, str) else ({}, {})
    try:
        if isinstance(minion, str) and minion not in fleet:
            raise _plan_lib.Refused(f"{minion!r} is not a known mail host")
        inv = inventory(fleet)
        # its own sending addresses: the inventory's (and pillar mailfleet:dnsbl:ips) when it
        # has an entry; else what it says of itself (a listing of those moves only itself)
        own = (inv[minion]["addresses"] + host_addresses({}, p)) if minion in inv else host_addresses(g, p)
        trans, refused = _plan_lib.check_event(payload, minion, own)
    except _plan_lib.Refused as exc:
        log.warning("mailfleet_reroute: refused DNSBL event from %r: %s", minion, exc)
        _fire(TAG_REFUSED, {"minion": minion, "why": str(exc)})
        return {"refused": str(exc)}
    log.info("mailfleet_reroute: DNSBL event from %s: %d transitions, %d refused", minion, len(trans), len(refused))
    for item, why in refused:
        log.warning("mailfleet_reroute: DNSBL transition from %s refused: %s: %s", minion, item, why)
    with _Lock(_ledger_path()):
        store = Store(_ledger_path())
        try:
            changed = []
            store.db.execute("BEGIN IMMEDIATE")
            try:
                for t in trans:
                    if store.record(minion, t, now):
                        changed.append(t)
                store.db.execute("COMMIT")
            except BaseException:
                store.db.execute("ROLLBACK")
                raise
            reason = "; ".join(f"{t['ip']} {t['state']} on {t['zone']}" for t in changed) or "DNSBL event"
            # every event (refreshes too) also converges a ledger left half-way (interrupted run)
            done = _converge(store, fleet, conf, reason, now)
            mode = store.current().get(minion, ("normal", None))
        finally:
            store.close()
    for t in changed:
        where = {"relay": f"outbound now relays through {mode[1]}", "hold": "outbound mail is held (deferred, not bounced)",
                 "normal": "outbound delivery is direct"}[mode[0]]
        _alert(f"dnsbl_{t['state']}", f"{minion} {t['ip']} {t['zone']}",
               f"{t['ip']} of {minion} {t['state']} on {t['zone']} ({', '.join(t['codes']) or 'no code'}: {t['why']}); {where}",
               {"host": minion, "ip": t["ip"], "zone": t["zone"], "codes": t["codes"], "mode": mode[0], "peer": mode[1],
                "steps": done}, "critical" if t["state"] == "listed" else "info")
    for t in trans:
        if t["state"] == "unknown":
            _alert("dnsbl_unknown", f"{minion} {t['zone']}",
                   f"DNSBL {t['zone']} gives no usable answer for {t['ip']} of {minion}: {t['why']}",
                   {"host": minion, "ip": t["ip"], "zone": t["zone"]}, "info")
    return {"changed": changed, "steps": done, "mode": {"mode": mode[0], "peer": mode[1]},
            "refused": [list(r) for r in refused]}


def status():
    """
    The ledger's view: every host's outbound mode (and its pillar), open listings.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_reroute.status
    """
    conf = _conf()
    store = Store(_ledger_path())
    try:
        rows, listings = store.rows(), store.open_listings()
    finally:
        store.close()
    now = time.time()
    fmt = lambda t: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else None
    for r in listings:
        r["listed"], r["codes"] = fmt(r["listed"]), json.loads(r["codes"])
    hosts = {r["host"]: dict(outbound_pillar(r["host"], rows, now, conf), held_since=fmt(r["held_since"]),
                             since=fmt(r["since"])) for r in rows}
    return {"hosts": hosts, "listings": listings}


def set_mode(host, mode="normal"):
    """
    Postmaster override for one host (e.g. back to ``normal`` after a listing was handled
    out of band): closes its open listings when set to normal, then converges.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_reroute.set_mode mail02.lab.test normal
    """
    if mode not in ("normal",):
        raise ValueError("set_mode takes mode=normal (listed hosts are moved by their listings)")
    conf = _conf()
    now = time.time()
    fleet = _fleet_data()
    if host not in fleet:
        raise ValueError(f"{host!r} is not a known mail host")
    with _Lock(_ledger_path()):
        store = Store(_ledger_path())
        try:
            store.db.execute("UPDATE dnsbl_listings SET cleared=? WHERE host=? AND cleared IS NULL", (now, host))
            done = _converge(store, fleet, conf, "postmaster: set_mode normal", now)
        finally:
            store.close()
    return {"steps": done}


def reconcile():
    """
    Converge the ledger's plan and apply mail.dnsbl on every host whose mode is not normal.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_reroute.reconcile
    """
    conf = _conf()
    now = time.time()
    fleet = _fleet_data()
    with _Lock(_ledger_path()):
        store = Store(_ledger_path())
        try:
            done = _converge(store, fleet, conf, "reconcile", now)
        finally:
            store.close()
    return {"steps": done}


def check():
    """
    Master schedule: alert for every host held longer than ``held_alert`` seconds.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_reroute.check
    """
    conf = _conf()
    now = time.time()
    store = Store(_ledger_path())
    try:
        rows = store.rows()
    finally:
        store.close()
    held = [r for r in rows if r["mode"] == "hold" and r["held_since"] and now - r["held_since"] > float(conf["held_alert"])]
    for r in held:
        hours = (now - r["held_since"]) / 3600
        _alert("outbound_held", r["host"], f"outbound mail of {r['host']} held for {hours:.0f} h ({r['reason']}); "
               "the queue lifetime is extended, nothing bounces, but it is not delivered",
               {"host": r["host"], "held_hours": round(hours, 1)}, "critical")
    return {"held": [r["host"] for r in held]}
