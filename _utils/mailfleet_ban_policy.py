"""
The fleet's ban decisions, the pure side (the mailfleet_defense runner's): the policy and
its limits (``mailfleet_defense:`` in the master config), the check of one abuse report
(bounded, its ``host`` the sending minion, every address a unicast one), the never-ban list
(the owner's entries as networks, what hosts say of themselves one address at a time),
escalation, the per-reporter rate cap with its bounded queue, and the new ban rows of one
report given the ledger's answers. No Salt: imported plainly (Salt puts the utils
directories on ``sys.path``).
"""
import ipaddress
import logging

import mailfleet_address  # the one address normaliser
import mailfleet_inventory
import mailfleet_report  # the envelope every report shares

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_ban_policy"


def __virtual__():
    return __virtualname__


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


class Refused(ValueError):
    """A report refused as a whole (forged host, wrong shape, too big)."""


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
    mailfleet_report.check_envelope(payload, sender, pol["max_report_bytes"], Refused)
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


def minion_entries(grains, pillar):
    """Never-ban entries of one minion: ``addresses`` (its grains: a claim about itself,
    taken one address at a time) and ``networks`` (its pillar's mynetworks and allow-list:
    master-owned data)."""
    grains, pillar = grains or {}, pillar or {}
    mf = pillar.get("mailfleet") or {}

    def items(v):
        return [x for x in v if isinstance(x, str)] if isinstance(v, list) else []
    relayhost = str(((mf.get("postfix") or {}).get("main") or {}).get("relayhost") or "")
    return {"addresses": items(grains.get("ipv4")) + items(grains.get("ipv6")),
            "networks": items((mf.get("host") or {}).get("mynetworks_extra"))
            + items((mf.get("defense") or {}).get("allow"))
            # the resolvers and the relayhost the host depends on: banning them cuts its
            # DNS or its outbound mail
            + items((mf.get("dnsbl") or {}).get("nameservers"))
            + _relayhost_addresses(relayhost)}


def _relayhost_addresses(relayhost):
    """Literal addresses of a Postfix relayhost (``[198.18.0.60]:587``, ``[2001:db8::1]``);
    a name is resolved by the host, so the master does not guess its address."""
    out = []
    for part in relayhost.replace(",", " ").split():
        host = part[1:part.index("]")] if part.startswith("[") and "]" in part else part.rsplit(":", 1)[0]
        try:
            out.append(str(ipaddress.ip_address(host)))
        except ValueError:
            continue
    return out


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
