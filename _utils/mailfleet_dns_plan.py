"""
DNS publishing, the pure side (the mailfleet_dns runner's): the TSIG key file read, each
host's published name and addresses (from the master-owned inventory; grains only without
one), the domains the targeted hosts serve, the zone of a name, the RFC 2136 updates from a
diff of desired and observed records, the verify table, and the verdict of one fetched
MTA-STS policy. No Salt, no DNS: imported plainly (Salt puts the utils directories on
``sys.path``).
"""
import ipaddress
import logging
import re

import mailfleet_fcrdns_verdict  # which addresses other hosts see
import mailfleet_inventory
import mailfleet_records as records

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_dns_plan"


def __virtual__():
    return __virtualname__


_KEY_RE = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)


def parse_tsig_keyfile(text):
    """``(name, algorithm, secret)`` of the first key in a BIND key file."""
    m = _KEY_RE.search(text or "")
    if not m:
        raise ValueError("no 'key \"name\" { algorithm ...; secret \"...\"; };' block")
    body = m.group(2)
    alg = re.search(r"algorithm\s+([A-Za-z0-9.-]+)\s*;", body)
    sec = re.search(r'secret\s+"([^"]+)"\s*;', body)
    if not alg or not sec:
        raise ValueError(f"key {m.group(1)}: algorithm or secret missing")
    return m.group(1), alg.group(1).lower(), sec.group(1)


def host_facts(grains):
    """``{"name", "ipv4", "ipv6"}`` of a mail host from its grains: the addresses other
    hosts can reach (loopback, link-local and unspecified addresses left out)."""
    def usable(values):
        return sorted(mailfleet_fcrdns_verdict.usable_addresses(values), key=ipaddress.ip_address)
    return {"name": grains.get("fqdn") or grains.get("id"),
            "ipv4": usable(grains.get("ipv4")), "ipv6": usable(grains.get("ipv6"))}


def inventory_facts(pillars, grains):
    """``{minion: facts}`` for the records: from the master-owned inventory (pillar
    mailfleet:inventory: name = the minion id, addresses = its entry's), never from what a
    host says of itself; only a fleet without an inventory falls back to the grains."""
    raw = mailfleet_inventory.from_pillars(pillars)
    if raw is None:
        log.warning("mailfleet_dns: no pillar mailfleet:inventory: host addresses from grains")
        return {m: host_facts(g) for m, g in grains.items()}
    inv, problems = mailfleet_inventory.parse(raw)
    missing = sorted(set(grains) - set(inv))
    if problems or missing:
        raise RuntimeError("; ".join(problems + [f"mailfleet:inventory:{m}: no entry (add the host's addresses)"
                                                 for m in missing]))
    out = {}
    for m in grains:
        addrs = inv[m]["addresses"]
        out[m] = {"name": m, "ipv4": sorted((a for a in addrs if ":" not in a), key=ipaddress.ip_address),
                  "ipv6": sorted((a for a in addrs if ":" in a), key=ipaddress.ip_address)}
    return out


def merge_domains(pillars):
    """``{domain: data}`` from ``{minion: pillar}``; every host serving a domain gets the
    same domain file, so the first copy is taken."""
    out = {}
    for minion in sorted(pillars):
        doms = ((pillars[minion] or {}).get("mailfleet") or {}).get("domains") or {}
        for domain, data in doms.items():
            out.setdefault(domain, data or {})
    return out


def zone_of(name, zones):
    """The longest zone among ``zones`` holding ``name`` (absolute names), or None."""
    best = None
    for zone in zones:
        if name == zone or name.endswith("." + zone):
            if best is None or len(zone) > len(best):
                best = zone
    return best


def plan_updates(desired, result, zones):
    """``{zone: [(op, name, type, rdata, ttl)]}`` from a diff: delete what is observed and
    not desired, add what is desired and not observed, only for published (owned) RRsets
    in one of ``zones``. Entries outside every zone are returned under ``None``."""
    plan = {}
    for kind in ("missing", "wrong", "extra"):
        for entry in result[kind]:
            if not entry["publish"]:
                continue
            zone = zone_of(entry["name"], zones)
            ops = plan.setdefault(zone, [])
            for rdata in entry["delete"]:
                ops.append(("delete", entry["name"], entry["type"], rdata, None))
            for rdata in entry["add"]:
                ops.append(("add", entry["name"], entry["type"], rdata, desired["ttl"]))
    return plan


def _short(values, width=60):
    text = " | ".join(records.normalize_rdata("TXT", v) if v.startswith('"') else v
                      for v in values) or "-"
    return text if len(text) <= width else text[:width - 3] + "..."


def verify_rows(domain_results, fcrdns):
    """Table rows (DOMAIN, NAME, TYPE, RESULT, DETAIL) and the count of bad ones."""
    rows, bad = [], 0
    for domain, res in sorted(domain_results.items()):
        if "error" in res:
            rows.append((domain, "-", "-", "ERROR", res["error"]))
            bad += 1
            continue
        for kind, label in (("missing", "MISSING"), ("wrong", "WRONG"), ("extra", "EXTRA"),
                            ("ok", "ok")):
            for e in res["diff"][kind]:
                if kind == "ok" and not e["desired"] and not e["observed"]:
                    continue
                if kind != "ok":
                    bad += 1
                if kind == "ok":
                    detail = _short(e["observed"])
                elif kind == "missing":
                    detail = "want " + _short(e["desired"])
                elif kind == "extra":
                    detail = "unexpected " + _short(e["observed"])
                else:
                    detail = f"want {_short(e['desired'], 40)}; DNS has {_short(e['observed'], 40)}"
                rows.append((domain, e["name"], e["type"], label, detail))
    for host, chk in sorted(fcrdns.items()):
        for ip, (ok, detail) in sorted(chk.items()):
            rows.append((host, ip, "FCrDNS", "ok" if ok else "WRONG", detail))
            bad += 0 if ok else 1
    return rows, bad


def domain_list(domains):
    """``None`` (all) or a set of domain names from a list or a comma-separated string."""
    if domains is None or domains == "":
        return None
    if isinstance(domains, str):
        domains = domains.split(",")
    return {str(d).strip().lower().rstrip(".") for d in domains if str(d).strip()}


def policy_verdict(want, status, body, error=None):
    """``(ok, detail)`` of one fetched MTA-STS policy against the text mailfleet publishes
    the id of (RFC 8461 3.3: HTTP 200, the same policy; line ends may be CRLF or LF)."""
    if error:
        return False, f"not served: {error}"
    if status != 200:
        return False, f"HTTP {status}, want 200"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False, "the policy is not UTF-8 text"
    if text.replace("\r\n", "\n") != want.replace("\r\n", "\n"):
        return False, ("served policy differs from the published id's: "
                       + " / ".join(text.splitlines())[:80])
    return True, " / ".join(l for l in want.splitlines() if l.startswith(("mode", "mx")))
