"""
mailfleet DNS records: the RRsets a mail domain needs, built from its pillar and the facts
of the hosts that serve it, and compared with what DNS shows.

One job: the record set of a domain (:func:`build`: MX and host addresses here, the policy
records from one builder per kind in ``mailfleet_records_kinds``, names and TXT strings in
``mailfleet_records_text``) and its comparison with DNS (:func:`diff`, :func:`preflight`).
Pure (no ``__salt__``, no network), imported plainly by the publishing runner
(``_runners/mailfleet_dns.py``) and the MTA-STS module (``_modules/mailfleet_dnsrecords.py``);
Salt puts the utils directories on ``sys.path``.

Pillar of a domain (``mailfleet:domains:<domain>``; every key under ``dns`` is optional)::

    example-a.test:
      hosts: [mail01.lab.test]            # minion ids that serve the domain
      dns:
        ttl: 3600
        mx: {mail01.lab.test: 10}         # priority per serving host (default 10)
        spf:
          extra: [include:_spf.example.net]   # terms added after the hosts' ip4/ip6
          all: -all                            # -all | ~all | ?all (default -all)
        dmarc:
          policy: none                     # none | quarantine | reject (the stage)
          subdomain_policy: quarantine     # sp=
          pct: 100
          rua: [dmarc@example-a.test]      # mailto: added when missing
          ruf: []
          adkim: r                         # r | s
          aspf: r
          fo: "1"
        mta_sts:                           # absent: no MTA-STS
          mode: enforce                    # enforce | testing | none
          max_age: 604800                  # <= 31557600 (RFC 8461 3.2)
          mx: [mail01.lab.test]            # default: the MX host names
          address_records: true            # A/AAAA of mta-sts.<domain> to the hosts
        tls_rpt:
          rua: [tlsrpt@example-a.test]

Host facts, one entry per minion id: ``{"name": "mail01.lab.test", "ipv4": [...],
"ipv6": [...]}`` (``name`` defaults to the id).

Output of :func:`build` (plain data; keys of the RRset dicts are ``(name, type)`` tuples,
names absolute, lower case, with the trailing dot; rdata in zone-file presentation form)::

    {"domain": "example-a.test.", "ttl": 3600,
     "rrsets": {(name, type): [rdata, ...]},   # what mailfleet publishes
     "owned":  {(name, type): None | prefix},  # what mailfleet may change or delete;
                                               # a prefix limits it to TXT values that
                                               # start with it (the apex SPF record among
                                               # other apex TXT records)
     "checks": {(name, type): {"rdata": [...], "match": "exact" | "prefix",
                               "why": str, "key": pillar key}},   # checked, never published
     "files":  {"mta-sts.txt": policy text},
     "warnings": [str, ...]}

Errors in the pillar raise :class:`RecordError`; its ``problems`` list names each pillar key.
"""
import ipaddress

from mailfleet_records_kinds import (  # noqa: F401  (part of this library's interface)
    dkim_record,
    mta_sts_policy,
    spf_lookup_count,
    spf_lookup_terms,
    sts_id,
    sts_pattern_matches,
)

from mailfleet_records_kinds import (  # salt://_utils
    dkim_records,
    dmarc_record,
    mta_sts_records,
    spf_record,
    tls_rpt_record,
)
from mailfleet_records_text import (  # salt://_utils
    DEFAULT_MX_PRIORITY,
    DEFAULT_TTL,
    HOSTNAME_RE,
    has_tag_prefix,
    is_name,
    is_under,
    quote_string,
)
from mailfleet_records_text import (  # noqa: F401  (part of this library's interface)
    RecordError,
    fqdn,
    txt_chunks,
    txt_rdata,
    txt_strings,
    txt_value,
)

__virtualname__ = "mailfleet_records"


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- the builder

def _addresses(facts, host, key, problems):
    out = []
    for fam in ("ipv4", "ipv6"):
        for ip in facts.get(fam) or []:
            try:
                addr = ipaddress.ip_address(str(ip))
            except ValueError:
                problems.append(f"{key}: host {host}: {ip!r} is not an IP address")
                continue
            if addr.version != int(fam[-1]):
                problems.append(f"{key}: host {host}: {ip} is not an {fam} address")
                continue
            out.append(addr)
    return out


def host_name(host_id, facts):
    return fqdn((facts or {}).get("name") or host_id)


def _sorted_rdata(rtype, values):
    values = list(dict.fromkeys(values))
    if rtype == "MX":
        return sorted(values, key=lambda v: (int(v.split()[0]), v.split()[1]))
    if rtype in ("A", "AAAA"):
        return sorted(values, key=ipaddress.ip_address)
    return sorted(values)


def build(domain, data, hosts, dkim=(), managed_domains=(), resolve_txt=None,
          publish_host_addresses=False):
    """
    Desired records of one mail domain (see the module docstring for the shapes).

    - ``data``: the domain's pillar (``mailfleet:domains:<domain>``).
    - ``hosts``: facts by minion id; only the ids the domain lists under ``hosts`` are used.
    - ``dkim``: published selectors, ``[{"selector", "k", "p"}]`` (``p=""`` revoked) or
      ``{"selector", "absent": True}`` for one being removed (owned, desired absent);
      :func:`mailfleet_dkimkeys.dns_entries` makes this list from the rotation state.
    - ``managed_domains``: the domains mailfleet publishes; an external DMARC report
      domain among them gets its authorisation record published, any other one becomes
      a check (the record must exist before anything is published, see :func:`preflight`).
    - ``resolve_txt(name) -> [values]``: when given, SPF lookups are counted through
      include:/redirect= too.
    - ``publish_host_addresses``: the A/AAAA of the host names are published (owned)
      instead of only checked.
    """
    problems, warnings = [], []
    try:
        zone = fqdn(domain)
    except ValueError:
        raise RecordError([f"mailfleet:domains: {domain!r} is not a domain name"])
    key = f"mailfleet:domains:{zone.rstrip('.')}"
    if not is_name(zone) or zone.count(".") < 2:
        raise RecordError([f"{key}: not a domain name"])
    data = data or {}
    dns = data.get("dns") or {}
    if not isinstance(dns, dict):
        raise RecordError([f"{key}:dns: must be a mapping"])
    hosts = hosts or {}
    managed = {fqdn(d) for d in managed_domains or ()}

    ttl = dns.get("ttl", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 60 <= ttl <= 604800:
        problems.append(f"{key}:dns:ttl: {ttl!r} must be 60..604800 seconds")
        ttl = DEFAULT_TTL

    serving = data.get("hosts") or []
    if not isinstance(serving, list) or not serving:
        problems.append(f"{key}:hosts: list the minion ids that serve the domain")
        serving = []
    facts = {}
    for host in serving:
        if host not in hosts:
            problems.append(f"{key}:hosts: no facts for host {host} (is its minion known?)")
            continue
        facts[host] = hosts[host] or {}

    rrsets, owned, checks = {}, {}, {}

    def put(name, rtype, rdata, prefix=None):
        rrsets.setdefault((name, rtype), []).append(rdata)
        owned[(name, rtype)] = prefix

    # MX: every serving host, priority from the pillar (default 10).
    prio = dns.get("mx") or {}
    if not isinstance(prio, dict):
        problems.append(f"{key}:dns:mx: must map host ids to priorities")
        prio = {}
    for host in prio:
        if host not in serving:
            problems.append(f"{key}:dns:mx: {host} is not one of the domain's hosts")
    mx_names = []
    all_addresses = []
    for host, fct in facts.items():
        p = prio.get(host, DEFAULT_MX_PRIORITY)
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p <= 65535:
            problems.append(f"{key}:dns:mx:{host}: priority {p!r} must be 0..65535")
            continue
        name = host_name(host, fct)
        if not HOSTNAME_RE.match(name):
            problems.append(f"{key}:hosts: {host}: {name!r} is not a host name")
            continue
        mx_names.append(name)
        put(zone, "MX", f"{p} {name}")
        addrs = _addresses(fct, host, f"{key}:hosts", problems)
        if not addrs:
            problems.append(f"{key}:hosts: host {host} has no IP address in its facts")
        all_addresses.extend(a for a in addrs if a not in all_addresses)
        # A/AAAA of the MX target: published only when asked, checked otherwise.
        for fam, rtype in ((4, "A"), (6, "AAAA")):
            vals = [str(a) for a in addrs if a.version == fam]
            if not vals:
                continue
            if publish_host_addresses:
                for v in vals:
                    put(name, rtype, v)
            else:
                checks[(name, rtype)] = {"rdata": _sorted_rdata(rtype, vals), "match": "exact",
                                         "why": f"address of mail host {host}",
                                         "key": f"{key}:hosts"}

    # SPF at the apex, from the sending addresses plus the pillar's extra terms.
    spf = spf_record(zone, f"{key}:dns:spf", dns.get("spf") or {}, all_addresses, resolve_txt,
               problems, warnings)
    put(zone, "TXT", txt_rdata(spf), prefix="v=spf1")

    # DKIM selectors from the rotation state.
    for name, record in dkim_records(zone, f"{key}:dkim", dkim, problems):
        if record is None:
            owned[(name, "TXT")] = None
        else:
            put(name, "TXT", txt_rdata(record))

    # DMARC, and the authorisation of external report domains (RFC 7489 7.1).
    dmarc, auths = dmarc_record(zone, f"{key}:dns:dmarc", dns.get("dmarc"), problems)
    put(f"_dmarc.{zone}", "TXT", txt_rdata(dmarc), prefix="v=DMARC1")
    for name, rua_domain, rkey in auths:
        if any(is_under(rua_domain, m) for m in managed):
            put(name, "TXT", txt_rdata("v=DMARC1"), prefix="v=DMARC1")
        else:
            checks[(name, "TXT")] = {
                "rdata": [txt_rdata("v=DMARC1")], "match": "prefix",
                "why": f"{rua_domain.rstrip('.')} must authorise DMARC reports for "
                       f"{zone.rstrip('.')} (RFC 7489 7.1)",
                "key": rkey}

    files = {}
    sts = dns.get("mta_sts")
    if sts:
        policy, record = mta_sts_records(zone, f"{key}:dns:mta_sts", sts, mx_names, problems)
        if policy:
            files["mta-sts.txt"] = policy
            put(f"_mta-sts.{zone}", "TXT", txt_rdata(record), prefix="v=STSv1")
            if sts.get("address_records", True):
                for a in all_addresses:
                    put(f"mta-sts.{zone}", "A" if a.version == 4 else "AAAA", str(a))

    tls = dns.get("tls_rpt")
    if tls:
        record = tls_rpt_record(f"{key}:dns:tls_rpt", tls, problems)
        if record:
            put(f"_smtp._tls.{zone}", "TXT", txt_rdata(record), prefix="v=TLSRPTv1")

    unknown = set(dns) - {"ttl", "mx", "spf", "dmarc", "mta_sts", "tls_rpt"}
    for name in sorted(unknown):
        problems.append(f"{key}:dns:{name}: unknown setting")
    if problems:
        raise RecordError(problems)

    return {
        "domain": zone,
        "ttl": ttl,
        "rrsets": {k: _sorted_rdata(k[1], rrsets[k]) for k in sorted(rrsets)},
        "owned": {k: owned[k] for k in sorted(owned)},
        "checks": {k: checks[k] for k in sorted(checks)},
        "files": files,
        "warnings": warnings,
    }


def expected_ptrs(hosts):
    """{(reverse name, "PTR"): [host name]} for every address of every host (checked only)."""
    out = {}
    for host, fct in sorted((hosts or {}).items()):
        name = host_name(host, fct)
        for fam in ("ipv4", "ipv6"):
            for ip in (fct or {}).get(fam) or []:
                rev = ipaddress.ip_address(str(ip)).reverse_pointer + "."
                out.setdefault((rev, "PTR"), [])
                if name not in out[(rev, "PTR")]:
                    out[(rev, "PTR")].append(name)
    return {k: sorted(out[k]) for k in sorted(out)}


# ---------------------------------------------------------------- compare with DNS

def normalize_rdata(rtype, rdata):
    """A comparable form: TXT joined, names absolute and lower case, addresses canonical."""
    rtype = rtype.upper()
    text = str(rdata).strip()
    if rtype == "TXT":
        return txt_value(text)
    if rtype in ("A", "AAAA"):
        return str(ipaddress.ip_address(text))
    if rtype == "MX":
        pref, target = text.split()
        return f"{int(pref)} {fqdn(target)}"
    if rtype in ("PTR", "CNAME", "NS"):
        return fqdn(text)
    return " ".join(text.split())


def normalize_rrsets(rrsets):
    """Observed RRsets in any case/spacing -> {(fqdn, TYPE): [rdata]} (rdata as given)."""
    out = {}
    for (name, rtype), values in (rrsets or {}).items():
        out.setdefault((fqdn(name), rtype.upper()), []).extend(values or [])
    return out


def _entry(name, rtype, desired, observed, publish):
    d = {normalize_rdata(rtype, r): r for r in desired}
    o = {normalize_rdata(rtype, r): r for r in observed}
    return {
        "name": name, "type": rtype, "publish": publish,
        "desired": [d[k] for k in sorted(d)], "observed": [o[k] for k in sorted(o)],
        "add": [d[k] for k in sorted(d) if k not in o],
        "delete": [o[k] for k in sorted(o) if k not in d],
    }


def diff(desired, observed):
    """
    Compare a :func:`build` result with observed RRsets ``{(name, type): [rdata]}``.

    Only owned names and types are compared (for a prefix-owned TXT RRset, only values
    with that prefix); checks are compared too, marked ``publish: False``. TXT values are
    compared joined, so a different split into strings is not a difference. Returns
    ``{"missing", "wrong", "extra", "ok"}``, lists of entries ``{"name", "type",
    "publish", "desired", "observed", "add", "delete"}``: *missing* = nothing observed,
    *wrong* = observed but different, *extra* = observed where mailfleet wants nothing.
    """
    obs = normalize_rrsets(observed)
    out = {"missing": [], "wrong": [], "extra": [], "ok": []}

    def classify(entry):
        if not entry["add"] and not entry["delete"]:
            out["ok"].append(entry)
        elif not entry["desired"]:
            out["extra"].append(entry)
        elif not entry["observed"]:
            out["missing"].append(entry)
        else:
            out["wrong"].append(entry)

    for (name, rtype), prefix in desired["owned"].items():
        seen = obs.get((name, rtype), [])
        if prefix is not None:
            seen = [r for r in seen if has_tag_prefix(normalize_rdata(rtype, r), prefix)]
        want = desired["rrsets"].get((name, rtype), [])
        if not want and not seen:
            out["ok"].append(_entry(name, rtype, want, seen, True))
            continue
        classify(_entry(name, rtype, want, seen, True))

    for (name, rtype), chk in desired.get("checks", {}).items():
        seen = obs.get((name, rtype), [])
        want = chk["rdata"]
        if chk.get("match") == "prefix":
            prefixes = [normalize_rdata(rtype, w) for w in want]
            good = [r for r in seen
                    if any(has_tag_prefix(normalize_rdata(rtype, r), p) for p in prefixes)]
            entry = _entry(name, rtype, want, seen, False)
            entry["add"] = [] if good else list(want)
            entry["delete"] = []
        else:
            entry = _entry(name, rtype, want, seen, False)
        entry["why"], entry["key"] = chk.get("why"), chk.get("key")
        classify(entry)

    for k in out:
        out[k].sort(key=lambda e: (e["name"], e["type"]))
    return out


def preflight(desired, observed):
    """
    Problems that must stop publishing: checked records (an external DMARC report
    domain's authorisation) that DNS does not show. Empty list: safe to publish.
    """
    result = diff({"owned": {}, "rrsets": {}, "checks": {
        k: v for k, v in desired.get("checks", {}).items() if v.get("match") == "prefix"}},
        observed)
    return [f"{e['key']}: needs TXT \"v=DMARC1\" at {e['name']} ({e['why']}); "
            f"DNS shows {'nothing' if not e['observed'] else e['observed']}"
            for e in result["missing"] + result["wrong"]]


# ---------------------------------------------------------------- output forms

def zone_snippet(domain, rrsets, ttl=None):
    """
    Zone-file text for the ``manual`` mode. ``rrsets`` is a :func:`build` result (then
    its TTL, checks and MTA-STS policy are included) or a bare ``{(name, type): [rdata]}``.
    Names outside the domain's zone are written as comments: they go in another zone.
    """
    zone = fqdn(domain)
    result = rrsets if "rrsets" in rrsets else {"rrsets": rrsets}
    ttl = ttl or result.get("ttl") or DEFAULT_TTL
    lines = [f"; mailfleet: records of {zone.rstrip('.')} (manual publishing mode)",
             f"; mailfleet owns these names and types; paste them into the {zone} zone."]
    outside = []
    for (name, rtype), values in result["rrsets"].items():
        for rdata in values:
            if rtype == "TXT" and len(txt_strings(rdata)) > 1:
                parts = [quote_string(s) for s in txt_strings(rdata)]
                text = f"{name} {ttl} IN TXT ( " + "\n\t".join(parts) + " )"
            else:
                text = f"{name} {ttl} IN {rtype} {rdata}"
            (lines if is_under(name, zone) else outside).append(text)
    if outside:
        lines.append("; Outside this zone: publish these in the zone that holds each name.")
        lines += ["; " + line.replace("\n", "\n; ") for line in outside]
    checks = result.get("checks") or {}
    if checks:
        lines.append("; Checked by mailfleet, not published by it:")
        for (name, rtype), chk in checks.items():
            for rdata in chk["rdata"]:
                lines.append(f";   {name} IN {rtype} {rdata}   ({chk['why']})")
    for fname, text in (result.get("files") or {}).items():
        if fname == "mta-sts.txt":
            lines.append(f"; MTA-STS policy, served at https://mta-sts.{zone.rstrip('.')}"
                         "/.well-known/mta-sts.txt:")
            lines += [";   " + line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def to_list(rrsets):
    """``{(name, type): [rdata]}`` -> JSON-able ``[{"name", "type", "rdata"}]``, sorted."""
    return [{"name": n, "type": t, "rdata": list(v)} for (n, t), v in sorted(rrsets.items())]


def from_list(items):
    return {(fqdn(i["name"]), i["type"].upper()): list(i["rdata"]) for i in items}


def jsonable(result):
    """A :func:`build` result with its tuple-keyed dicts turned into lists (Salt returns)."""
    out = dict(result)
    out["rrsets"] = to_list(result["rrsets"])
    out["owned"] = [{"name": n, "type": t, "prefix": p}
                    for (n, t), p in result["owned"].items()]
    out["checks"] = [dict(chk, name=n, type=t) for (n, t), chk in result["checks"].items()]
    return out
