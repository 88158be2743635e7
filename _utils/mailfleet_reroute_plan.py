"""
DNSBL reaction, the pure side (the mailfleet_reroute runner's): the check of one
``mailfleet/dnsbl/transition`` event (bounded, about the sender's own master-known
addresses only), the outbound plan of the fleet given its open listings (a listed host
relays through a clean peer, or holds when none is left), and the ordered steps from the
current modes to the planned ones (a peer admits before a host relays through it, and
stops only after). No Salt: imported plainly (Salt puts the utils directories on
``sys.path``).
"""
import re

import mailfleet_address  # the one address normaliser
import mailfleet_report  # the envelope every report shares

__virtualname__ = "mailfleet_reroute_plan"


def __virtual__():
    return __virtualname__


STATES = ("listed", "cleared", "unknown")


MODES = ("normal", "relay", "hold")


MAX_TRANSITIONS = 500


MAX_EVENT_BYTES = 256 << 10


ZONE_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")


class Refused(ValueError):
    pass


def norm_ip(text):
    return mailfleet_address.address(text)


def check_event(payload, sender, host_ips):
    """(transitions, refused): the checked transitions of one event, or raise Refused.

    ``host_ips``: the sending minion's own addresses as the master knows them."""
    mailfleet_report.check_envelope(payload, sender, MAX_EVENT_BYTES, Refused)
    trans = payload.get("transitions")
    if not isinstance(trans, list) or len(trans) > MAX_TRANSITIONS:
        raise Refused("transitions must be a list of at most %d" % MAX_TRANSITIONS)
    own = set()
    for a in host_ips or []:
        try:
            own.add(norm_ip(a))
        except ValueError:
            pass
    out, refused = [], []
    for t in trans:
        if not isinstance(t, dict):
            refused.append((repr(t)[:80], "not a mapping"))
            continue
        try:
            ip = norm_ip(t.get("ip"))
        except ValueError:
            refused.append((repr(t.get("ip"))[:80], "not an address"))
            continue
        if ip not in own:
            refused.append((ip, f"not an address of {sender}"))
            continue
        zone = t.get("zone")
        if not isinstance(zone, str) or not ZONE_RE.match(zone.strip(".").lower()):
            refused.append((ip, f"bad zone {str(zone)[:80]!r}"))
            continue
        state = t.get("state")
        if state not in STATES:
            refused.append((ip, f"bad state {str(state)[:20]!r}"))
            continue
        codes = [str(c)[:20] for c in (t.get("codes") or [])[:10]] if isinstance(t.get("codes"), list) else []
        out.append({"ip": ip, "zone": zone.strip(".").lower(), "state": state, "codes": codes,
                    "why": str(t.get("why") or "")[:200], "initial": bool(t.get("initial"))})
    return out, refused


def plan(fleet, listed, current):
    """Desired {host: (mode, peer)} for every fleet host.

    ``fleet``: {host: {"peer_ok": bool}} (mail hosts the master knows); ``listed``: hosts
    with an open listing; ``current``: {host: (mode, peer)} from the ledger."""
    clean = sorted(h for h, info in fleet.items() if h not in listed and info.get("peer_ok", True))
    load = {p: 0 for p in clean}
    desired = {}
    for h in sorted(fleet):
        if h not in listed:
            desired[h] = ("normal", None)
    for h in sorted(h for h in fleet if h in listed):
        peers = [p for p in clean if p != h] if not fleet[h].get("no_relay") else []
        mode, peer = current.get(h, ("normal", None))
        if mode == "relay" and peer in peers:
            choice = peer  # stable: keep a peer that is still clean
        elif peers:
            choice = min(peers, key=lambda p: (load[p], p))
        else:
            choice = None
        if choice:
            load[choice] += 1
            desired[h] = ("relay", choice)
        else:
            desired[h] = ("hold", None)
    return desired


def steps(desired, current, admits=None):
    """The ordered actions turning ``current`` into ``desired``: [(action, host, peer)].

    ``admit`` (the peer admits the host: apply on the peer) comes before ``relay``;
    ``normal``/``hold``/``relay`` on the host come before ``unadmit`` of its old peer.
    ``admits``: {host: peer admitting it} from the ledger; an admission no longer needed
    (left by an interrupted run, say) is withdrawn too."""
    admits = admits or {}
    first, then, last = [], [], []
    for h, (mode, peer) in sorted(desired.items()):
        cmode, cpeer = current.get(h, ("normal", None))
        if mode == "relay" and admits.get(h) != peer:
            first.append(("admit", h, peer))
        if (mode, peer) != (cmode, cpeer):
            then.append((mode, h, peer))
        old = admits.get(h) or (cpeer if cmode == "relay" else None)
        if old and not (mode == "relay" and peer == old):
            last.append(("unadmit", h, old))
    return first + then + last
