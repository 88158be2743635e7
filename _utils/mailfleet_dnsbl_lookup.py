"""
DNSBL lookups of a mail host's own sending addresses: names, decoding, rounds, transitions.

One job, pure (no Salt dunders; unit-tested in tests/unit/test_dnsbl.py), imported plainly by
the mailfleet_watch detector and the ``mailfleet_dnsbl`` execution module (Salt puts the utils
directories on ``sys.path``):

- :func:`query_name`: RFC 5782 names: IPv4 reversed octets, IPv6 32 reversed nibbles, then the
  zone, with a trailing dot; a Spamhaus DQS key turns ``zen.spamhaus.org`` into
  ``<key>.zen.dq.spamhaus.net``.
- :func:`decode`: one lookup outcome -> verdict ``listed`` / ``clear`` / ``unknown``, decoded
  per zone. Spamhaus ZEN: 127.0.0.2 SBL, .3 CSS, .4-.7 XBL, .9 DROP, .10/.11 PBL. SpamCop and
  Barracuda answer 127.0.0.2. 127.255.255.252/254/255 (typo in the zone name, public
  resolver refused, rate limit), 127.0.1.255, any other 127.255.255.x, any code the zone does
  not document, an answer outside 127/8 (a resolver rewriting NXDOMAIN), timeouts, SERVFAIL
  and REFUSED are ``unknown``: never ``listed``. NXDOMAIN (or a name without A) is ``clear``.
  (Spamhaus' return-code page; RFC 5782 section 2.1.)
- :func:`check_round`: every address against every zone, each zone self-tested first
  (RFC 5782 section 5: 127.0.0.2 must be listed, 127.0.0.1 must not); a zone failing its
  self-test gives ``unknown`` for all its addresses, whatever they answered.
- :class:`Tracker`: transitions only: ``listed``, ``cleared``, ``unknown``. The first
  observation after a start reports ``listed`` or ``cleared`` (marked ``initial``) so the master
  can reconcile a listing that ended while the host was not watching; a first ``unknown``
  reports nothing.

The ``mailfleet_watch`` detector runs :func:`check_round` every ``interval`` in a
thread (see _utils/mailfleet_watch.py) and fires ``mailfleet/dnsbl/transition`` on
transitions; ``salt <host> mailfleet_dnsbl.check`` shows the current verdicts (the same code,
through the host's configured resolver).

Pillar ``mailfleet:dnsbl`` (salt/mail/defense.sls passes it to the engine)::

    zones: [zen.spamhaus.org, bl.spamcop.net, b.barracudacentral.org]   # default
           # an entry may be {zone: name, codes: {"127.0.0.2": "meaning", ...}}
    dqs_key: ""        # Spamhaus Data Query Service key (host pillar; never logged)
    interval: 300      # seconds between rounds
    refresh: 3600      # seconds between events restating every verdict (catch-up)
    timeout: 5         # seconds per query
    resolvers: []      # nameserver addresses; default the host's /etc/resolv.conf
    ips: []            # sending addresses; default the host's global ipv4/ipv6 grains
"""
import ipaddress
import logging

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_dnsbl_lookup"

LISTED, CLEAR, UNKNOWN = "listed", "clear", "unknown"
TRANSITION = {LISTED: "listed", CLEAR: "cleared", UNKNOWN: "unknown"}

DEFAULT_ZONES = ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]

# Spamhaus return codes (https://docs.spamhaus.com/datasets/docs/source/40-real-world-usage/
# PublicMirrors/MTAs/020-Postfix.html and "DNSBL return codes").
SPAMHAUS_ZEN = {
    "127.0.0.2": "SBL: Spamhaus Block List",
    "127.0.0.3": "SBL CSS: snowshoe spam sources",
    "127.0.0.4": "XBL: exploited / botnet (CBL)",
    "127.0.0.5": "XBL: exploited / botnet",
    "127.0.0.6": "XBL: exploited / botnet",
    "127.0.0.7": "XBL: exploited / botnet",
    "127.0.0.9": "SBL DROP/EDROP: hijacked netblock",
    "127.0.0.10": "PBL: ISP policy (end-user range, must not send direct)",
    "127.0.0.11": "PBL: Spamhaus policy (end-user range, must not send direct)",
}
ERRORS = {
    "127.255.255.252": "error: typing error in the DNSBL name",
    "127.255.255.254": "error: query through a public/open resolver (refused)",
    "127.255.255.255": "error: excessive number of queries (rate limited)",
    "127.0.1.255": "error: DBL error code",
}
KNOWN_ZONES = {
    "zen.spamhaus.org": SPAMHAUS_ZEN,
    "sbl.spamhaus.org": {k: v for k, v in SPAMHAUS_ZEN.items() if k in ("127.0.0.2", "127.0.0.3", "127.0.0.9")},
    "xbl.spamhaus.org": {k: v for k, v in SPAMHAUS_ZEN.items() if k in ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")},
    "pbl.spamhaus.org": {k: v for k, v in SPAMHAUS_ZEN.items() if k in ("127.0.0.10", "127.0.0.11")},
    "bl.spamcop.net": {"127.0.0.2": "SpamCop: listed (spam reports)"},
    "b.barracudacentral.org": {"127.0.0.2": "Barracuda BRBL: listed"},
    "dnsbl.lab.test": {"127.0.0.2": "lab DNSBL: listed"},
}
DQS_ZONES = {"zen.spamhaus.org": "zen", "sbl.spamhaus.org": "sbl", "xbl.spamhaus.org": "xbl",
             "pbl.spamhaus.org": "pbl"}

TEST_LISTED = ipaddress.IPv4Address("127.0.0.2")
TEST_CLEAR = ipaddress.IPv4Address("127.0.0.1")


def __virtual__():
    return __virtualname__


# --- names ---------------------------------------------------------------------------------

def _zone_text(zone):
    if not isinstance(zone, str) or not zone.strip(".") or len(zone) > 200:
        raise ValueError(f"bad DNSBL zone {zone!r}")
    z = zone.strip().strip(".").lower()
    if any(not part or len(part) > 63 for part in z.split(".")):
        raise ValueError(f"bad DNSBL zone {zone!r}")
    return z


def query_domain(zone, dqs_key=None):
    """The domain actually queried for ``zone``: with a DQS key, Spamhaus zones go to
    ``<key>.<zen|sbl|xbl|pbl>.dq.spamhaus.net``; other zones are unchanged."""
    z = _zone_text(zone)
    if dqs_key and z in DQS_ZONES:
        key = str(dqs_key).strip()
        if not key.isalnum() or len(key) > 63:
            raise ValueError("mailfleet:dnsbl:dqs_key must be the alphanumeric DQS key")
        return f"{key}.{DQS_ZONES[z]}.dq.spamhaus.net"
    return z


def query_name(ip, zone, dqs_key=None):
    """RFC 5782 query name (trailing dot): 192.0.2.1 -> 1.2.0.192.<zone>.; IPv6 -> the 32
    nibbles of the full address, least significant first. IPv4-mapped IPv6 is queried as
    IPv4."""
    addr = ipaddress.ip_address(ip.strip() if isinstance(ip, str) else ip)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.version == 4:
        labels = str(addr).split(".")[::-1]
    else:
        labels = list(addr.exploded.replace(":", ""))[::-1]
    return ".".join(labels) + "." + query_domain(zone, dqs_key) + "."


# --- decoding ------------------------------------------------------------------------------

def zone_codes(zone, codes=None):
    """The listing codes of a zone: pillar ``codes`` if given, else the known table, else
    ``None`` (generic RFC 5782: any 127.0.0.2-127.0.0.254 is a listing)."""
    if codes:
        return {str(ipaddress.IPv4Address(str(k))): str(v) for k, v in dict(codes).items()}
    return KNOWN_ZONES.get(_zone_text(zone))


def verdict(state, codes=(), why=""):
    return {"state": state, "codes": list(dict.fromkeys(codes)), "why": why}


def decode(zone, outcome, codes=None):
    """Verdict for one lookup outcome.

    ``outcome`` is what :func:`resolve` returns: ``("answer", ["127.0.0.2", ...])``,
    ``("nxdomain", None)``, ``("noanswer", None)`` or ``("error", "timeout"|"SERVFAIL"|...)``.
    Any error code or unexpected answer makes the whole verdict ``unknown``: a zone that
    refuses us says nothing about our address.
    """
    table = zone_codes(zone, codes)
    kind, value = outcome
    if kind in ("nxdomain", "noanswer"):
        return verdict(CLEAR, why="not listed")
    if kind != "answer":
        return verdict(UNKNOWN, why=f"lookup failed: {value}")
    answers = list(value or [])
    if not answers:
        return verdict(CLEAR, why="not listed")
    meanings, listed = [], []
    for a in answers:
        try:
            ip = ipaddress.IPv4Address(str(a))
        except ValueError:
            return verdict(UNKNOWN, [str(a)[:64]], f"not an IPv4 answer: {str(a)[:64]!r}")
        text = str(ip)
        if text in ERRORS:
            return verdict(UNKNOWN, [text], ERRORS[text])
        if ip in ipaddress.IPv4Network("127.255.255.0/24"):
            return verdict(UNKNOWN, [text], "error: 127.255.255.x code")
        if ip not in ipaddress.IPv4Network("127.0.0.0/8"):
            return verdict(UNKNOWN, [text], "answer outside 127.0.0.0/8 (resolver rewriting NXDOMAIN?)")
        if table is not None:
            if text not in table:
                return verdict(UNKNOWN, [text], f"undocumented return code {text}")
            meanings.append(table[text])
        else:
            if not (ip in ipaddress.IPv4Network("127.0.0.0/24") and 2 <= int(ip) & 0xFF <= 254):
                return verdict(UNKNOWN, [text], f"unexpected return code {text}")
            meanings.append(f"listed ({text})")
        listed.append(text)
    return verdict(LISTED, listed, "; ".join(sorted(set(meanings))))


def selftest(zone, listed_outcome, clear_outcome, codes=None):
    """(ok, why): RFC 5782 section 5 test points through the same path as real queries."""
    v2 = decode(zone, listed_outcome, codes)
    v1 = decode(zone, clear_outcome, codes)
    if v2["state"] != LISTED:
        return False, f"self-test: 127.0.0.2 not listed ({v2['state']}: {v2['why']})"
    if v1["state"] != CLEAR:
        return False, f"self-test: 127.0.0.1 not clear ({v1['state']}: {v1['why']})"
    return True, "self-test passed"


def zone_specs(entries):
    """[(zone, codes or None)] from pillar ``zones`` (names or {zone:, codes:}), checked;
    errors name the pillar key."""
    if entries is None:
        entries = DEFAULT_ZONES
    if not isinstance(entries, (list, tuple)):
        raise ValueError("mailfleet:dnsbl:zones must be a list")
    out, seen = [], set()
    for i, e in enumerate(entries):
        try:
            if isinstance(e, dict):
                z, codes = _zone_text(e.get("zone")), e.get("codes")
                zone_codes(z, codes)
            else:
                z, codes = _zone_text(e), None
        except (ValueError, TypeError) as exc:
            raise ValueError(f"mailfleet:dnsbl:zones[{i}]: {exc}") from None
        if z not in seen:
            seen.add(z)
            out.append((z, codes or None))
    return out


def sending_ips(candidates):
    """Addresses worth checking: global unicast IPv4/IPv6 (loopback, link-local, unspecified
    and multicast dropped; IPv4-mapped folded), deduplicated, in order."""
    out = []
    for c in candidates or []:
        try:
            ip = ipaddress.ip_address(str(c).split("%")[0].strip())
        except ValueError:
            continue
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return out


def check_round(ips, zones, lookup, dqs_key=None):
    """One round: {"zones": {zone: {"ok", "why"}}, "verdicts": {(ip, zone): verdict}}.

    ``zones`` from :func:`zone_specs`; ``lookup(name)`` returns an outcome (see
    :func:`decode`). A zone failing its self-test gives ``unknown`` for every address (its
    answers cannot be trusted either way) and is not asked about them.
    """
    result = {"zones": {}, "verdicts": {}}
    for zone, codes in zones:
        ok, why = selftest(zone, lookup(query_name(TEST_LISTED, zone, dqs_key)),
                           lookup(query_name(TEST_CLEAR, zone, dqs_key)), codes)
        result["zones"][zone] = {"ok": ok, "why": why}
        for ip in ips:
            if ok:
                result["verdicts"][(ip, zone)] = decode(zone, lookup(query_name(ip, zone, dqs_key)), codes)
            else:
                result["verdicts"][(ip, zone)] = verdict(UNKNOWN, why=f"zone failed its {why}")
    return result


class Tracker:
    """Last verdict per (ip, zone); :meth:`update` returns the transitions only."""

    def __init__(self):
        self.last = {}

    def update(self, verdicts):
        out = []
        for key, v in verdicts.items():
            prev = self.last.get(key)
            state = v["state"]
            if prev == state or (prev is None and state == UNKNOWN):
                continue  # (nothing known yet stays nothing known)
            self.last[key] = state
            ip, zone = key
            out.append({"ip": ip, "zone": zone, "state": TRANSITION[state], "previous": prev,
                        "codes": list(v["codes"]), "why": v["why"], "initial": prev is None})
        for key in [k for k in self.last if k not in verdicts]:
            del self.last[key]  # an address or zone no longer checked
        return out


# --- resolving (dnspython; the host's configured resolver) --------------------------------

def make_lookup(resolvers=None, timeout=5.0, port=53):
    """A ``lookup(name)`` through dnspython: the host's /etc/resolv.conf, or ``resolvers``
    (on ``port``)."""
    import dns.exception
    import dns.resolver

    res = dns.resolver.Resolver(configure=not resolvers)
    if resolvers:
        res.nameservers = [str(ipaddress.ip_address(r)) for r in resolvers]
        res.port = int(port)
    res.lifetime = float(timeout)
    res.timeout = min(float(timeout), 2.0)
    res.cache = None

    def lookup(name):
        try:
            ans = res.resolve(name, "A", raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return ("nxdomain", None)
        except dns.resolver.NoNameservers as exc:  # SERVFAIL / REFUSED from every server
            return ("error", f"SERVFAIL/REFUSED ({str(exc)[:120]})")
        except dns.exception.Timeout:
            return ("error", "timeout")
        except dns.exception.DNSException as exc:
            return ("error", type(exc).__name__)
        if ans.rrset is None:
            return ("noanswer", None)
        return ("answer", [r.address for r in ans.rrset])

    return lookup


def settings(conf):
    """Checked settings from pillar ``mailfleet:dnsbl`` (errors name the key)."""
    conf = dict(conf or {})
    out = {"zones": zone_specs(conf.get("zones")), "dqs_key": conf.get("dqs_key") or None}
    for key, default in (("interval", 300), ("timeout", 5), ("refresh", 3600)):
        val = conf.get(key, default)
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0:
            raise ValueError(f"mailfleet:dnsbl:{key}: {val!r} is not a positive number")
        out[key] = float(val)
    for key in ("resolvers", "ips"):
        val = conf.get(key) or []
        if not isinstance(val, list):
            raise ValueError(f"mailfleet:dnsbl:{key} must be a list")
        for v in val:
            try:
                ipaddress.ip_address(str(v))
            except ValueError:
                raise ValueError(f"mailfleet:dnsbl:{key}: {v!r} is not an address") from None
        out[key] = [str(v) for v in val]
    if out["dqs_key"]:
        query_domain("zen.spamhaus.org", out["dqs_key"])
    return out
