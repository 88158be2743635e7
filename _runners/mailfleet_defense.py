"""
The fleet's ban decisions (issue 6): the abuse reactor hands every ``mailfleet/abuse/report``
event to :func:`report`; this runner treats it as untrusted input, decides, records and acts.

Flow of one report (``mailfleet_watch`` engine on a mail host -> reactor/abuse.sls -> here):

1. ``check_report``: the payload must be a bounded mapping whose ``host`` is the minion that
   sent it (the ``id`` Salt put on the event; a host cannot report in another's name), with
   at most ``max_offenders`` entries; every address must parse (``ipaddress``; IPv4-mapped
   IPv6 counts as IPv4) and be a unicast address.
2. ``allowed``: never ban the fleet's own addresses (each minion's ``ipv4``/``ipv6`` grains
   from the master's cache), the master's, loopback, each host's mynetworks
   (``mailfleet:host:mynetworks_extra`` in the cached pillar) and the allow-list
   ``mailfleet_defense:allow`` of the master config.
3. Dedup and escalation (``ban_timeout``): an address already banned is left alone; one banned
   before (within ``memory`` seconds) gets ``base * factor ** n`` seconds, capped at ``max``
   (defaults 600 s, x2, 24 h: mailcow's doubling, fail2ban's 10 min start).
4. Rate cap (``schedule``): at most ``rate`` (1,000) new bans per reporting minion per
   ``period`` (60 s). The excess is recorded with a later ``not_before`` and applied when its
   turn comes (:func:`drain`, from the master schedule and from every later report), never
   dropped; a ``ban_rate`` alert (``mailfleet_alert``: event, webhook, mail; at most one per
   reporting host per alert period) says so.
5. The ledger (sqlite, ``mailfleet_ledger`` or ``<cachedir>/mailfleet/ledger.sqlite``, outside
   the file server) records each ban with its reason, reporting minion, times and expiry,
   then one ``LocalClient.cmd_async`` of ``mailfleet_ban.add`` bans on every fleet host
   (``mailfleet_defense:target``, default ``*``).

Hosts that missed the fast path catch up from the ledger: the ``mailfleet_bans`` ext_pillar
(_pillar/mailfleet_bans.py) hands its active bans to every host and the state
``mailfleet_ban.reconciled`` makes the sets contain them (on minion start and on a schedule).

Runners: ``bans`` (list the ledger), ``unban``, ``drain``, ``active``, ``release`` (a held SASL
user, see _runners/mailfleet_accounts.py: report() hands it the ``outbound`` and ``queue``
parts of each report before any address is judged).
"""
import ipaddress
import json
import logging
import threading
import secrets
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_address
import mailfleet_events
import mailfleet_inventory
import mailfleet_ledger
import mailfleet_report

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_defense"

DEFAULTS = {
    "ban_timeout": {"base": 600, "factor": 2, "max": 86400, "memory": 7 * 86400},
    "rate": 1000,  # new bans per reporting minion per period
    "period": 60,
    "max_offenders": 5000,  # per report; the engine sends at most 500
    "max_report_bytes": 2 << 20,
    "allow": [],  # addresses or networks never banned
    "target": "*",
    "tgt_type": "glob",
    "revoked_memory": 7 * 86400,  # unbans handed to hosts for reconciliation
    # bans waiting their turn (the rate cap): per reporting host and in all; the excess is
    # refused (and alerted), so one compromised host cannot grow the ledger without bound
    "max_queued_per_reporter": 10_000,
    "max_queued": 50_000,
}

ALERT_TAG = "mailfleet/alert/ban_rate"


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("report", "drain", "bans", "unban", "forget_reporter", "release")


def __virtual__():
    return __virtualname__


REPORT_TAG = "mailfleet/abuse/report"


class Refused(ValueError):
    """A report refused as a whole (forged host, wrong shape, too big)."""


# --- pure decision logic -----------------------------------------------------------------

def policy(overrides=None):
    """DEFAULTS with master-config overrides (``mailfleet_defense:``), checked."""
    pol = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for key, value in (overrides or {}).items():
        if key not in pol:
            raise ValueError(f"unknown mailfleet_defense setting {key!r}")
        if isinstance(pol[key], dict):
            pol[key].update(value or {})
        else:
            pol[key] = value
    for key in ("rate", "period", "max_offenders", "max_queued_per_reporter", "max_queued"):
        if not isinstance(pol[key], int) or isinstance(pol[key], bool) or pol[key] <= 0:
            raise ValueError(f"mailfleet_defense:{key} must be a positive integer")
    return pol


def norm_address(text):
    """Canonical address text, or raise ValueError (non-strings, garbage, non-unicast)."""
    return mailfleet_address.address(text, ban=True)


def check_report(payload, sender, pol):
    """(offenders [(address, reason)], refusals [(item, why)]) or raise Refused.

    ``payload`` is the event's data (the engine's report), ``sender`` the minion id Salt
    attached to the event.
    """
    if not isinstance(sender, str) or not sender:
        raise Refused("event without a sending minion id")
    if not isinstance(payload, dict):
        raise Refused("report is not a mapping")
    if len(json.dumps(payload, default=str)) > pol["max_report_bytes"]:
        raise Refused("report too large")
    host = payload.get("host")
    if host != sender:
        raise Refused(f"report names host {host!r} but was sent by {sender!r}")
    offenders = payload.get("offenders", [])
    if not isinstance(offenders, list):
        raise Refused("offenders is not a list")
    if len(offenders) > pol["max_offenders"]:
        raise Refused(f"{len(offenders)} offenders in one report (max {pol['max_offenders']})")
    out, refused, seen = [], [], set()
    for entry in offenders:
        if not isinstance(entry, dict):
            refused.append((repr(entry)[:80], "entry is not a mapping"))
            continue
        raw = entry.get("ip")
        try:
            addr = norm_address(raw)
        except ValueError as exc:
            refused.append((repr(raw)[:80], str(exc)))
            continue
        if addr in seen:
            continue
        seen.add(addr)
        rules = entry.get("rules") if isinstance(entry.get("rules"), dict) else {}
        reason = {str(k)[:32]: int(v) for k, v in list(rules.items())[:10]
                  if isinstance(v, int) and not isinstance(v, bool)}
        out.append((addr, reason))
    return out, refused


def allow_networks(entries, addresses=()):
    """ip_network objects for the never-ban list; bad entries are logged and skipped.

    ``entries``: what the master's owner wrote (master config, pillar): addresses or networks
    no wider than /16 or /48. ``addresses``: what hosts say of themselves (grains, the
    master's interfaces): single addresses only, so a grain of 0.0.0.0/0 allow-lists nothing."""
    nets = []
    for e, single in [(e, False) for e in entries or []] + [(a, True) for a in addresses or []]:
        try:
            net = mailfleet_address.network(str(e), single=single)
        except ValueError as exc:
            log.warning("mailfleet_defense: allow-list entry refused: %s", exc)
            continue
        nets.append(net)
        if net.version == 4:  # the same address as IPv4-mapped IPv6
            nets.append(ipaddress.ip_network(f"::ffff:{net.network_address}/{96 + net.prefixlen}"))
    return nets


def allowed(address, nets):
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or any(ip.version == n.version and ip in n for n in nets)


def escalate(prior, pol):
    """Timeout for an address banned ``prior`` times before (within memory)."""
    t = pol["ban_timeout"]
    return int(min(t["base"] * (t["factor"] ** prior), t["max"]))


def schedule(recent, n, now, rate, period):
    """``not_before`` times for ``n`` new bans of one reporter.

    ``recent``: the sorted not_before times of that reporter's bans in the last ``period``
    (and any queued later). At most ``rate`` bans in any ``period``: the k-th new one waits
    until ``period`` after the ``rate``-th before it. Nothing is dropped.
    """
    times = sorted(recent)
    out = []
    for _ in range(n):
        t = now if len(times) < rate else max(now, times[-rate] + period)
        times.append(t)
        out.append(t)
    return out


def decide(offenders, sender, now, pol, nets, ledger):
    """New ban rows for the checked ``offenders`` (pure, given the ledger's answers).

    Returns (bans, skipped): bans are dicts ready for :meth:`Ledger.insert`, skipped lists
    (address, why) for allow-listed and already-banned addresses.
    """
    bans, skipped = [], []
    fresh = []
    for addr, reason in offenders:
        if allowed(addr, nets):
            skipped.append((addr, "allow-listed"))
            continue
        if ledger.is_banned(addr, now):
            skipped.append((addr, "already banned"))
            continue
        fresh.append((addr, reason))
    slots = schedule(ledger.recent_not_before(sender, now - pol["period"]), len(fresh), now,
                     pol["rate"], pol["period"])
    mine, total = ledger.queued_by(sender, now), ledger.queued(now)
    kept = []
    for item, nb in zip(fresh, slots):
        if nb > now:  # waits its turn: counts against the queue bounds
            if mine >= pol["max_queued_per_reporter"]:
                skipped.append((item[0], "ban queue full for this reporter"))
                continue
            if total >= pol["max_queued"]:
                skipped.append((item[0], "ban queue full"))
                continue
            mine, total = mine + 1, total + 1
        kept.append((item, nb))
    for (addr, reason), nb in kept:
        prior = ledger.prior_bans(addr, now - pol["ban_timeout"]["memory"])
        timeout = escalate(prior, pol)
        bans.append({"address": addr, "reporter": sender, "reason": reason, "created": now,
                     "not_before": nb, "timeout": timeout, "expires": nb + timeout,
                     "level": prior})
    return bans, skipped


# --- the ledger ----------------------------------------------------------------------------

class Ledger(mailfleet_ledger.Tables):
    """Every ban on the master, in sqlite (WAL: concurrent reactor threads, crash-safe)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS bans (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL, family INTEGER NOT NULL, reporter TEXT NOT NULL,
        reason TEXT NOT NULL, created REAL NOT NULL, not_before REAL NOT NULL,
        timeout INTEGER NOT NULL, expires REAL NOT NULL, level INTEGER NOT NULL,
        applied REAL, revoked REAL, revoked_by TEXT);
    CREATE INDEX IF NOT EXISTS bans_address ON bans(address);
    CREATE INDEX IF NOT EXISTS bans_reporter ON bans(reporter, not_before);
    CREATE INDEX IF NOT EXISTS bans_pending ON bans(applied, not_before);
    """

    def is_banned(self, address, now):
        return self.db.execute(
            "SELECT 1 FROM bans WHERE address=? AND revoked IS NULL AND expires>? LIMIT 1",
            (address, now)).fetchone() is not None

    def prior_bans(self, address, since):
        return self.db.execute("SELECT count(*) FROM bans WHERE address=? AND created>=?",
                               (address, since)).fetchone()[0]

    def recent_not_before(self, reporter, since):
        return [r[0] for r in self.db.execute(
            # a ban dropped before its turn (forget_reporter) took no slot of the rate
            "SELECT not_before FROM bans WHERE reporter=? AND not_before>?"
            " AND NOT (revoked IS NOT NULL AND applied IS NULL) ORDER BY not_before",
            (reporter, since))]

    def insert(self, bans):
        for b in bans:
            self.db.execute(
                "INSERT INTO bans(address, family, reporter, reason, created, not_before, timeout,"
                " expires, level) VALUES (?,?,?,?,?,?,?,?,?)",
                (b["address"], ipaddress.ip_address(b["address"]).version, b["reporter"],
                 json.dumps(b["reason"], sort_keys=True), b["created"], b["not_before"],
                 b["timeout"], b["expires"], b["level"]))

    def due(self, now):
        """Bans whose turn has come and that were not sent yet: [(id, address, seconds left)]."""
        return [(r["id"], r["address"], int(r["expires"] - now)) for r in self.db.execute(
            "SELECT id, address, expires FROM bans WHERE applied IS NULL AND revoked IS NULL"
            " AND not_before<=? AND expires>? ORDER BY not_before, id", (now, now + 1))]

    def mark_applied(self, ids, now):
        self.db.executemany("UPDATE bans SET applied=? WHERE id=?", [(now, i) for i in ids])

    def queued_by(self, reporter, now):
        return self.db.execute("SELECT count(*) FROM bans WHERE reporter=? AND applied IS NULL AND revoked IS NULL"
                               " AND not_before>?", (reporter, now)).fetchone()[0]

    def prune(self, now, memory=DEFAULTS["ban_timeout"]["memory"]):
        """Delete rows expired (or revoked) longer than ``memory`` ago: past the escalation
        memory they decide nothing. Returns how many."""
        return self.db.execute("DELETE FROM bans WHERE max(expires, coalesce(revoked, 0)) < ?",
                               (now - memory,)).rowcount

    def queued(self, now):
        return self.db.execute("SELECT count(*) FROM bans WHERE applied IS NULL AND revoked IS NULL"
                               " AND not_before>?", (now,)).fetchone()[0]

    def revoke(self, address, now, who):
        cur = self.db.execute("UPDATE bans SET revoked=?, revoked_by=? WHERE address=? AND revoked IS NULL"
                              " AND expires>?", (now, who, address, now))
        return cur.rowcount

    def revoke_reporter(self, reporter, now, who, queued_only=True):
        """Revoke ``reporter``'s bans still waiting their turn (``queued_only=False``: and the
        ones in force). Returns {"queued": n, "in_force": [addresses]}."""
        cur = self.db.execute("UPDATE bans SET revoked=?, revoked_by=? WHERE reporter=? AND revoked IS NULL"
                              " AND applied IS NULL AND not_before>?", (now, who, reporter, now))
        out = {"queued": cur.rowcount, "in_force": []}
        if not queued_only:
            rows = self.db.execute("SELECT id, address FROM bans WHERE reporter=? AND revoked IS NULL"
                                   " AND expires>?", (reporter, now)).fetchall()
            self.db.executemany("UPDATE bans SET revoked=?, revoked_by=? WHERE id=?",
                                [(now, who, r["id"]) for r in rows])
            out["in_force"] = sorted({r["address"] for r in rows})
        return out

    def active(self, now):
        """{address: expires} of bans in force (their turn has come, not revoked)."""
        out = {}
        for r in self.db.execute("SELECT address, max(expires) AS e FROM bans WHERE revoked IS NULL"
                                 " AND not_before<=? AND expires>? GROUP BY address", (now, now)):
            out[r["address"]] = r["e"]
        return out

    def revoked_since(self, since, now):
        active = self.active(now)
        return sorted({r[0] for r in self.db.execute(
            "SELECT address FROM bans WHERE revoked>=?", (since,))} - set(active))

    def rows(self, now, include_all=False):
        where = "" if include_all else " WHERE revoked IS NULL AND expires>?"
        args = () if include_all else (now,)
        return [dict(r) for r in self.db.execute(f"SELECT * FROM bans{where} ORDER BY id", args)]


def ledger_path(opts):
    return mailfleet_ledger.path(opts)


# --- Salt glue --------------------------------------------------------------------------------

def _policy():
    return policy(__opts__.get("mailfleet_defense"))


_CACHE = {}  # survives between calls in the reactor's process: allow-list (30 s), LocalClient
ALLOW_TTL = 30


def _fleet_allow(pol):
    """The allow-list, rebuilt at most every ALLOW_TTL seconds (a new minion's addresses are
    in the cache once its grains are)."""
    key = ("allow", json.dumps(pol["allow"], default=str))
    hit = _CACHE.get(key)
    if hit and time.monotonic() - hit[0] < ALLOW_TTL:
        return hit[1]
    nets = _build_allow(pol)
    _CACHE[key] = (time.monotonic(), nets)
    return nets


def _build_allow(pol):
    """Allow-list: master config entries, the master, every minion's addresses and mynetworks."""
    entries, addresses = list(pol["allow"]), []
    iface = __opts__.get("interface")
    if iface and iface not in ("0.0.0.0", "::"):
        addresses.append(iface)
    try:
        import salt.utils.network
        addresses += salt.utils.network.ip_addrs() + salt.utils.network.ip_addrs6()
    except Exception:  # pragma: no cover
        log.exception("mailfleet_defense: master addresses")
    try:
        found = _minion_addresses()
        entries += found["networks"]
        addresses += found["addresses"]
    except Exception:  # pragma: no cover
        log.exception("mailfleet_defense: minion data cache")
    return allow_networks(entries, addresses)


def minion_entries(grains, pillar):
    """Never-ban entries of one minion: ``addresses`` (its grains: a claim about itself,
    taken one address at a time) and ``networks`` (its pillar's mynetworks and allow-list:
    master-owned data)."""
    grains, pillar = grains or {}, pillar or {}
    mf = pillar.get("mailfleet") or {}

    def items(v):
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []
    return {"addresses": items(grains.get("ipv4")) + items(grains.get("ipv6")),
            "networks": items((mf.get("host") or {}).get("mynetworks_extra"))
            + items((mf.get("defense") or {}).get("allow"))}


def fleet_entries(fleet):
    """Never-ban entries of the fleet ({minion: (grains, pillar)}): the networks of every
    host's pillar, and the fleet's own addresses from the master-owned inventory (pillar
    mailfleet:inventory); only without an inventory from the hosts' grains (one address at
    a time), with a warning."""
    found = {"addresses": [], "networks": []}
    for _mid, (g, p) in sorted(fleet.items()):
        one = minion_entries(g, p)
        found["networks"] += one["networks"]
        found["addresses"] += one["addresses"]
    inv, problems = mailfleet_inventory.parse(mailfleet_inventory.from_pillars({m: p for m, (_g, p) in fleet.items()}))
    for problem in problems:
        log.error("mailfleet_defense: %s", problem)
    if inv:
        found["addresses"] = [a for entry in inv.values() for a in entry["addresses"]]
    elif fleet:
        log.warning("mailfleet_defense: no pillar mailfleet:inventory: the fleet's own addresses come from "
                    "the hosts' grains (what they say of themselves)")
    return found


def _minion_addresses():
    """From the master's minion data cache: 3008 keeps banks ``grains`` and ``pillar`` keyed
    by minion id; older releases one ``minions/<id>`` bank with key ``data``."""
    import salt.cache

    cache = salt.cache.Cache(__opts__)
    fleet = {}
    ids = set(cache.list("grains") or []) | set(cache.list("pillar") or [])
    for mid in ids:
        fleet[mid] = (cache.fetch("grains", mid) or {}, cache.fetch("pillar", mid) or {})
    for mid in cache.list("minions") or []:
        data = cache.fetch(f"minions/{mid}", "data") or {}
        fleet.setdefault(mid, (data.get("grains") or {}, data.get("pillar") or {}))
    found = fleet_entries(fleet)
    if not ids and not found["addresses"]:
        log.error("mailfleet_defense: no minion data in the master's cache: the fleet's own "
                  "addresses are unknown (minion_data_cache off?)")
    return found


def _fire(tag, data):
    mailfleet_events.fire(__opts__, tag, data)


_SEND_LOCK = threading.Lock()  # reactor runners run in a thread pool; one shared client


def _send(pol, items, fun="mailfleet_ban.add"):
    with _SEND_LOCK:
        return _send_locked(pol, items, fun)


def _send_locked(pol, items, fun):
    import salt.client
    client = _CACHE.get("client")
    if client is None:
        client = _CACHE["client"] = salt.client.get_local_client(mopts=__opts__)
    try:
        return client.cmd_async(pol["target"], fun, arg=[items], tgt_type=pol["tgt_type"])
    except Exception:  # noqa: BLE001
        _CACHE.pop("client", None)  # a stale connection: one retry with a new client
        client = _CACHE["client"] = salt.client.get_local_client(mopts=__opts__)
    return client.cmd_async(pol["target"], fun, arg=[items], tgt_type=pol["tgt_type"])


def _apply_due(led, pol, now):
    """Publish the bans whose turn has come, outside any write transaction (other ledger
    writers do not wait for the publish); only what was published is marked applied (the
    rest goes with the next drain)."""
    due = led.due(now)
    if not due:
        return 0, None
    items = {addr: max(1, left) for _id, addr, left in due}
    try:
        jid = _send(pol, items)
    except Exception:  # noqa: BLE001
        log.exception("mailfleet_defense: publishing %d bans failed; the next drain retries", len(due))
        return 0, None
    if not jid:
        log.error("mailfleet_defense: %d bans not published (no job id); the next drain retries", len(due))
        return 0, None
    with led:
        led.mark_applied([i for i, _a, _l in due], now)
    return len(due), jid


def report(minion=None, payload=None, tag=None):
    """
    Decide on one abuse report (the abuse reactor calls this with the raw event).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.report mail01.lab.test '{...}'  # what reactor/abuse.sls does
    """
    pol = _policy()
    now = time.time()
    try:
        # the signature names the sender; the event's minion id proves nothing (issue 13)
        minion, payload = mailfleet_report.check(__opts__, ledger_path(__opts__), REPORT_TAG, payload, minion)
        offenders, refused = check_report(payload, minion, pol)
    except (Refused, mailfleet_report.Refused) as exc:
        return mailfleet_events.refuse_report(globals().get("__salt__"), _fire, "mailfleet_defense", "report",
                                              REPORT_TAG, "mailfleet/defense/refused", minion, exc)
    # Accounts first (_runners/mailfleet_accounts.py): a SASL user over its outbound volume
    # is held before any address is judged (the usual cause of a listing); the queue part
    # raises its alert. Neither may stop the ban path.
    accounts = {}
    for part, fun in (("outbound", "mailfleet_accounts.outbound"), ("queue", "mailfleet_accounts.queue")):
        if payload.get(part):
            try:
                accounts[part] = __salt__[fun](minion, payload)
            except Exception:  # noqa: BLE001
                log.exception("mailfleet_defense: %s from %s", fun, minion)
    nets = _fleet_allow(pol)
    led = Ledger(ledger_path(__opts__))
    try:
        with led:
            bans, skipped = decide(offenders, minion, now, pol, nets, led)
            led.insert(bans)
        applied, jid = _apply_due(led, pol, now)
        queued = led.queued(now)
    finally:
        led.close()
    if queued:  # after the bans went out: an alert (webhook, mail) must not delay them
        _alert_rate(minion, queued, pol)
    full = [a for a, why in skipped if why.startswith("ban queue full")]
    if full:
        try:
            __salt__["mailfleet_alert.send"](
                "ban_queue_full", minion, f"{len(full)} bans reported by {minion} refused: the ban queue is full "
                f"({pol['max_queued_per_reporter']} per host, {pol['max_queued']} in all)",
                details={"host": minion, "refused": len(full), "first": full[:20]}, severity="critical")
        except Exception:  # noqa: BLE001
            log.exception("mailfleet_defense: ban_queue_full alert failed")
    for addr, why in refused + [s for s in skipped if s[1] == "allow-listed"]:
        log.warning("mailfleet_defense: %s not banned (report from %s): %s", addr, minion, why)
    ret = {"banned": [b["address"] for b in bans if b["not_before"] <= now],
           "queued": queued, "sent": applied, "jid": jid,
           "skipped": [list(s) for s in skipped], "invalid": [list(r) for r in refused]}
    if accounts:
        ret["accounts"] = accounts
    log.info("mailfleet_defense: report from %s: %d new bans, %d queued, %d skipped, %d invalid",
             minion, len(bans), queued, len(skipped), len(refused))
    return ret


def _alert_rate(minion, queued, pol):
    """The rate cap held bans back: one alert per reporting host per alert period (a storm
    reports every second; mailfleet_alert throttles), the raw event if alerts fail."""
    data = {"minion": minion, "queued": queued, "rate": pol["rate"], "period": pol["period"]}
    try:
        __salt__["mailfleet_alert.send"](
            "ban_rate", minion, f"{queued} bans from {minion} wait their turn: more than "
            f"{pol['rate']} new bans in {pol['period']} s (queued, not dropped)", details=data)
    except Exception:  # noqa: BLE001
        log.exception("mailfleet_defense: ban_rate alert failed; raw event instead")
        _fire(ALERT_TAG, data)


def drain():
    """
    Send the queued bans whose turn has come (master schedule, every few seconds).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.drain
    """
    pol = _policy()
    now = time.time()
    led = Ledger(ledger_path(__opts__))
    try:
        sent, jid = _apply_due(led, pol, now)
        queued = led.queued(now)
        if secrets.randbelow(300) == 0:  # about every 5 minutes at the schedule's 1 s
            memory = max(pol["ban_timeout"]["memory"], pol["revoked_memory"])
            with led:
                pruned = led.prune(now, memory)
            if pruned:
                log.info("mailfleet_defense: %d expired ban rows pruned", pruned)
    finally:
        led.close()
    return {"sent": sent, "jid": jid, "queued": queued}


def bans(all=False):
    """
    The ledger: bans in force (``all=True``: every row ever recorded).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.bans all=True
    """
    led = Ledger(ledger_path(__opts__))
    try:
        rows = led.rows(time.time(), include_all=bool(all))
    finally:
        led.close()
    for r in rows:
        r["reason"] = json.loads(r["reason"])
        for k in ("created", "not_before", "expires", "applied", "revoked"):
            if r.get(k):
                r[k] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r[k]))
    return rows


def active():
    """{address: expires epoch} in force, and recently revoked addresses (for reconciliation)."""
    pol = _policy()
    now = time.time()
    led = Ledger(ledger_path(__opts__))
    try:
        return {"active": led.active(now), "revoked": led.revoked_since(now - pol["revoked_memory"], now)}
    finally:
        led.close()


def unban(address):
    """Lift a ban in the ledger and on every host at once. ``address``: one address, a
    comma-separated list or a list (one nft batch per host for all of them).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.unban 198.51.100.7
        salt-run mailfleet_defense.unban 198.51.100.7,2001:db8::7
    """
    pol = _policy()
    items = address if isinstance(address, (list, tuple)) else str(address).split(",")
    addrs = [norm_address(a.strip() if isinstance(a, str) else a) for a in items if str(a).strip()]
    if not addrs:
        raise ValueError("mailfleet_defense.unban: no address given")
    now = time.time()
    led = Ledger(ledger_path(__opts__))
    try:
        with led:
            revoked = {a: led.revoke(a, now, "runner") for a in addrs}
    finally:
        led.close()
    jid = _send(pol, addrs, fun="mailfleet_ban.remove")
    if len(addrs) == 1:
        return {"address": addrs[0], "revoked": revoked[addrs[0]], "jid": jid}
    return {"addresses": addrs, "revoked": sum(revoked.values()), "jid": jid}


def forget_reporter(host, unban=False):
    """Drop the bans ``host`` reported that still wait their turn (the rate cap) and, with
    ``unban=True``, lift the ones in force on every host as well, except addresses another host
    reported too. For a host taken out of the fleet's trust (``mailfleet_trust.isolate`` calls
    it): what it claimed while compromised must not keep landing for minutes.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.forget_reporter mail02.example.net
        salt-run mailfleet_defense.forget_reporter mail02.example.net unban=True
    """
    if not isinstance(host, str) or not host or len(host) > 255:
        raise ValueError(f"mailfleet_defense.forget_reporter: host {host!r} is not a minion id")
    pol = _policy()
    now = time.time()
    led = Ledger(ledger_path(__opts__))
    try:
        with led:
            gone = led.revoke_reporter(host, now, f"forget:{host}", queued_only=not unban)
            lifted = sorted(set(gone["in_force"]) - set(led.active(now)))
    finally:
        led.close()
    jid = None
    for start in range(0, len(lifted), 5000):  # one nft batch per host per chunk
        jid = _send(pol, lifted[start:start + 5000], fun="mailfleet_ban.remove")
    log.warning("mailfleet_defense: forgot %s: %d queued bans dropped, %d lifted", host, gone["queued"], len(lifted))
    return {"host": host, "dropped": gone["queued"], "lifted": len(lifted), "first": lifted[:50], "jid": jid}


def release(user):
    """
    Release a held SASL user (see _runners/mailfleet_accounts.py): its hold ends on every
    host and its held mail is delivered.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_defense.release alice@example-a.test
    """
    return __salt__["mailfleet_accounts.release"](user)
