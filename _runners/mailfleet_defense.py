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

Runners: ``bans`` (list the ledger), ``unban``, ``drain``, ``forget_reporter``, ``release`` (a
held SASL user, see _runners/mailfleet_accounts.py: report() hands it the ``outbound`` and
``queue`` parts of each report before any address is judged).

The decisions (steps 1-4) are _utils/mailfleet_ban_policy.py, the bans table
_utils/mailfleet_ban_ledger.py; this runner reads Salt's caches, sends and alerts.
"""
import json
import logging
import threading
import secrets
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_ban_ledger as _bl  # the ledger's bans table
import mailfleet_ban_policy as _bp  # the decisions: report check, never-ban list, rate cap
import mailfleet_events
import mailfleet_ledger
import mailfleet_report

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_defense"


ALERT_TAG = "mailfleet/alert/ban_rate"


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("report", "drain", "bans", "unban", "forget_reporter", "release")


def __virtual__():
    return __virtualname__


REPORT_TAG = "mailfleet/abuse/report"


# --- pure decision logic -----------------------------------------------------------------


# --- the ledger ----------------------------------------------------------------------------


def ledger_path(opts):
    return mailfleet_ledger.path(opts)


# --- Salt glue --------------------------------------------------------------------------------

def _policy():
    return _bp.policy(__opts__.get("mailfleet_defense"))


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
    # The resolvers the master publishes and checks DNS through, and its own: banning one
    # cuts the fleet's DNS (master-owned settings, so taken as written).
    addresses += [str(__opts__[k]) for k in ("mailfleet_dns_server", "mailfleet_dns_resolver") if __opts__.get(k)]
    try:
        import salt.utils.dns
        addresses += [str(ip) for ip in salt.utils.dns.parse_resolv().get("nameservers", [])]
    except Exception:  # noqa: BLE001 (no resolv.conf: nothing to add)
        log.debug("mailfleet_defense: no resolv.conf nameservers")
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
    return _bp.allow_networks(entries, addresses)


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
    found = _bp.fleet_entries(fleet)
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
        offenders, refused = _bp.check_report(payload, minion, pol)
    except (_bp.Refused, mailfleet_report.Refused) as exc:
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
    led = _bl.Ledger(ledger_path(__opts__))
    try:
        with led:
            bans, skipped = _bp.decide(offenders, minion, now, pol, nets, led)
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
    led = _bl.Ledger(ledger_path(__opts__))
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
    led = _bl.Ledger(ledger_path(__opts__))
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
    led = _bl.Ledger(ledger_path(__opts__))
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
    addrs = [_bp.norm_address(a.strip() if isinstance(a, str) else a) for a in items if str(a).strip()]
    if not addrs:
        raise ValueError("mailfleet_defense.unban: no address given")
    now = time.time()
    led = _bl.Ledger(ledger_path(__opts__))
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
    led = _bl.Ledger(ledger_path(__opts__))
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
