"""
One builder per policy record kind of a mail domain, each checking its pillar key and
naming it in every problem: SPF (with the RFC 7208 lookup count), DMARC (RFC 7489, and the
report authorisation of external domains), TLS-RPT (RFC 8460), MTA-STS (RFC 8461: the
policy file and its id record) and DKIM (RFC 6376 / 8463). ``mailfleet_records.build``
assembles them with the MX and address records. Pure; imported plainly.
"""
import base64
import binascii
import hashlib
import ipaddress
import re

from mailfleet_records_text import (  # salt://_utils
    DEFAULT_SPF_ALL,
    DEFAULT_STS_MAX_AGE,
    DMARC_POLICIES,
    SPF_LOOKUP_LIMIT,
    SPF_LOOKUP_MECHANISMS,
    SPF_LOOKUP_MODIFIERS,
    SPF_MECHANISMS,
    SPF_SIZE_ADVICE,
    STS_MAX_AGE_LIMIT,
    STS_MODES,
    _B64,
    HOSTNAME_RE,
    has_tag_prefix,
    _LOCALPART,
    _SELECTOR,
    is_name,
    is_under,
    fqdn,
)

__virtualname__ = "mailfleet_records_kinds"


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- SPF

def _spf_term_name(term):
    """(kind, name, argument) of an SPF term: kind is 'mechanism' or 'modifier'."""
    body = term[1:] if term[:1] in "+-~?" else term
    m = re.match(r"^([A-Za-z][A-Za-z0-9_.-]*)(.*)$", body)
    if not m:
        return None, None, None
    name, rest = m.group(1).lower(), m.group(2)
    if rest.startswith("=") and term[:1] not in "+-~?":
        return "modifier", name, rest[1:]
    return "mechanism", name, rest


def spf_lookup_terms(terms):
    """The terms that make a DNS query (RFC 7208 4.6.4): include a mx ptr exists redirect."""
    out = []
    for term in terms:
        kind, name, _ = _spf_term_name(term)
        if (kind == "mechanism" and name in SPF_LOOKUP_MECHANISMS) or (
                kind == "modifier" and name in SPF_LOOKUP_MODIFIERS):
            out.append(term)
    return out


def spf_lookup_count(record, resolve_txt=None, _depth=0, _seen=None):
    """
    Count the DNS-querying terms of an SPF record; with ``resolve_txt(name) -> [values]``
    the records reached through include: and redirect= are counted too (RFC 7208 4.6.4
    counts them across the whole evaluation). Returns (count, [term, ...]).
    """
    # _seen holds the include chain above this record: a loop stops there, but the same
    # record reached twice by different paths is evaluated (and counted) twice.
    seen = frozenset() if _seen is None else _seen
    terms = record.split()[1:] if record.lower().startswith("v=spf1") else record.split()
    found = []
    for term in spf_lookup_terms(terms):
        found.append(term)
        kind, name, arg = _spf_term_name(term)
        if resolve_txt is None or name not in ("include", "redirect") or _depth > 10:
            continue
        target = arg[1:] if name == "include" else arg
        if not target or "%" in target:
            continue  # macros expand at evaluation time
        target = fqdn(target)
        if target in seen:
            continue
        spf = [v for v in (resolve_txt(target) or []) if has_tag_prefix(v, "v=spf1")]
        if len(spf) == 1:
            _, sub = spf_lookup_count(spf[0], resolve_txt, _depth + 1, seen | {target})
            found.extend(sub)
    return len(found), found


def _check_spf_term(term, key, problems, warnings):
    kind, name, arg = _spf_term_name(term)
    if kind is None or re.search(r"\s", term):
        problems.append(f"{key}: {term!r} is not an SPF term")
        return
    if kind == "modifier":
        if name in ("redirect", "exp") and not arg:
            problems.append(f"{key}: {term!r} needs a domain")
        return
    if name not in SPF_MECHANISMS:
        problems.append(f"{key}: {term!r}: unknown SPF mechanism {name!r} "
                        f"(known: {', '.join(SPF_MECHANISMS)})")
    elif name == "all":
        problems.append(f"{key}: {term!r}: set the 'all' term with the spf:all key")
    elif name in ("include", "exists") and (not arg.startswith(":") or len(arg) < 2):
        problems.append(f"{key}: {term!r} needs a domain ({name}:<domain>)")
    elif name in ("ip4", "ip6"):
        try:
            net = ipaddress.ip_network(arg[1:] if arg.startswith(":") else "-", strict=False)
            if net.version != int(name[-1]):
                raise ValueError
        except ValueError:
            problems.append(f"{key}: {term!r}: not an IPv{name[-1]} address or network")
    elif name == "ptr":
        warnings.append(f"{key}: {term!r}: RFC 7208 5.5 says the ptr mechanism SHOULD NOT "
                        "be used (slow, and some receivers ignore it)")


def spf_record(domain, key, cfg, addresses, resolve_txt, problems, warnings):
    if not isinstance(cfg, dict):
        problems.append(f"{key}: must be a mapping")
        cfg = {}
    extra = cfg.get("extra") or []
    if isinstance(extra, str):
        extra = extra.split()
    if not isinstance(extra, list):
        problems.append(f"{key}:extra: must be a list of SPF terms")
        extra = []
    extra = [str(t).strip() for t in extra if str(t).strip()]
    for term in extra:
        _check_spf_term(term, f"{key}:extra", problems, warnings)
    all_term = cfg.get("all", DEFAULT_SPF_ALL)
    if all_term not in ("-all", "~all", "?all", None, False):
        problems.append(f"{key}:all: {all_term!r} must be -all, ~all or ?all "
                        "(+all authorises the whole internet)")
        all_term = DEFAULT_SPF_ALL

    terms = []
    for ip in addresses:
        terms.append(f"ip{ip.version}:{ip}")
    for term in extra:
        if term not in terms:
            terms.append(term)
    redirect = [t for t in terms if _spf_term_name(t)[1] == "redirect"]
    if all_term and not redirect:  # RFC 7208 6.1: redirect is ignored when 'all' is present
        terms.append(all_term)
    record = " ".join(["v=spf1"] + terms)

    count, found = spf_lookup_count(record, resolve_txt)
    if count > SPF_LOOKUP_LIMIT:
        problems.append(
            f"{key}:extra: the SPF record needs {count} DNS lookups "
            f"({', '.join(found)}); RFC 7208 4.6.4 allows at most {SPF_LOOKUP_LIMIT} "
            "(receivers return permerror): use ip4:/ip6: terms or fewer include: terms")
    if len(record) > SPF_SIZE_ADVICE:
        warnings.append(f"{key}: the SPF record is {len(record)} characters; RFC 7208 3.4 "
                        f"advises under {SPF_SIZE_ADVICE} so the answer fits a 512-octet UDP reply")
    if not addresses and not any(_spf_term_name(t)[1] != "all" for t in terms):
        warnings.append(f"{key}: the SPF record authorises no sender ({record})")
    return record


# ---------------------------------------------------------------- DMARC, TLS-RPT

def _mail_uri(value, key, problems, allow_size=False, allow_https=False):
    """``mailto:`` URI from an address or a URI; returns (uri, address domain or None)."""
    text = str(value).strip()
    if allow_https and text.lower().startswith("https://"):
        if re.search(r"[\s,;!]", text):
            problems.append(f"{key}: {text!r}: commas, semicolons, '!' and spaces must be "
                            "%-encoded in a report URI")
        return text, None
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:"):]
    size = ""
    if allow_size and "!" in text:
        text, size = text.split("!", 1)
        if not re.match(r"^\d+[kmgt]?$", size):
            problems.append(f"{key}: {value!r}: size limit must look like !10m (RFC 7489 6.2)")
        size = "!" + size
    local, at, host = text.rpartition("@")
    try:
        host_fq = fqdn(host) if host else ""
    except ValueError:
        host_fq = ""
    if not at or not _LOCALPART.match(local) or not is_name(host_fq) or "!" in local:
        problems.append(f"{key}: {value!r} is not a mail address or mailto: URI")
        return None, None
    return f"mailto:{local}@{host_fq.rstrip('.')}{size}", host_fq


def _list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [v for v in str(value).split(",") if v.strip()]


def dmarc_record(domain, key, cfg, problems):
    """(record, [(auth name, rua domain, report key)]) for _dmarc.<domain>."""
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        problems.append(f"{key}: must be a mapping")
        cfg = {}
    tags = [("v", "DMARC1")]
    policy = cfg.get("policy", "none")
    if policy not in DMARC_POLICIES:
        problems.append(f"{key}:policy: {policy!r} must be one of {', '.join(DMARC_POLICIES)}")
        policy = "none"
    tags.append(("p", policy))
    sp = cfg.get("subdomain_policy")
    if sp is not None:
        if sp not in DMARC_POLICIES:
            problems.append(f"{key}:subdomain_policy: {sp!r} must be one of "
                            f"{', '.join(DMARC_POLICIES)}")
        else:
            tags.append(("sp", sp))
    pct = cfg.get("pct")
    if pct is not None:
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            problems.append(f"{key}:pct: {pct!r} must be an integer from 0 to 100")
        elif pct != 100:
            tags.append(("pct", str(pct)))
    auths = []
    for tag in ("rua", "ruf"):
        uris = []
        for addr in _list(cfg.get(tag)):
            uri, host = _mail_uri(addr, f"{key}:{tag}", problems, allow_size=True)
            if not uri:
                continue
            uris.append(uri)
            # RFC 7489 7.1: a report address outside the domain's organisation needs
            # <domain>._report._dmarc.<report domain> TXT "v=DMARC1". Without a public
            # suffix list, one name being below the other counts as the same organisation.
            if not (is_under(host, domain) or is_under(domain, host)):
                auths.append((f"{domain}_report._dmarc.{host}", host, f"{key}:{tag}"))
        if uris:
            tags.append((tag, ",".join(uris)))
    for tag, allowed in (("adkim", ("r", "s")), ("aspf", ("r", "s"))):
        val = cfg.get(tag)
        if val is None:
            continue
        if val not in allowed:
            problems.append(f"{key}:{tag}: {val!r} must be r (relaxed) or s (strict)")
        else:
            tags.append((tag, val))
    fo = cfg.get("fo")
    if fo is not None:
        fo = str(fo)
        if not re.match(r"^[01ds](:[01ds])*$", fo):
            problems.append(f"{key}:fo: {fo!r} must be 0, 1, d, s or a colon list of them")
        else:
            tags.append(("fo", fo))
    ri = cfg.get("ri")
    if ri is not None:
        if isinstance(ri, bool) or not isinstance(ri, int) or ri <= 0:
            problems.append(f"{key}:ri: {ri!r} must be a positive number of seconds")
        else:
            tags.append(("ri", str(ri)))
    unknown = set(cfg) - {"policy", "subdomain_policy", "pct", "rua", "ruf", "adkim", "aspf",
                          "fo", "ri"}
    for name in sorted(unknown):
        problems.append(f"{key}:{name}: unknown DMARC setting")
    return "; ".join(f"{k}={v}" for k, v in tags), auths


def tls_rpt_record(key, cfg, problems):
    if not isinstance(cfg, dict):
        problems.append(f"{key}: must be a mapping with rua")
        return None
    uris = []
    for addr in _list(cfg.get("rua")):
        uri, _ = _mail_uri(addr, f"{key}:rua", problems, allow_https=True)
        if uri:
            uris.append(uri)
    if not uris:
        problems.append(f"{key}:rua: at least one mailto: address or https: URL is required "
                        "(RFC 8460 3)")
        return None
    return "v=TLSRPTv1; rua=" + ",".join(uris)


# ---------------------------------------------------------------- MTA-STS

def sts_pattern_matches(pattern, host):
    """RFC 8461 4.1: ``*.example.net`` matches exactly one extra leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, _, rest = host.partition(".")
        return bool(first) and rest == pattern[2:]
    return pattern == host


def sts_policy(mode, mx, max_age):
    """The policy file text (RFC 8461 3.2), CRLF-separated key/value lines."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {m}" for m in mx]
    lines.append(f"max_age: {int(max_age)}")
    return "\r\n".join(lines) + "\r\n"


def sts_id(policy_text):
    """A policy id (RFC 8461 3.1: 1-32 alphanumerics) that changes when the policy does."""
    return hashlib.sha256(policy_text.encode("utf-8")).hexdigest()[:32]


def mta_sts_records(domain, key, cfg, mx_names, problems):
    if not isinstance(cfg, dict):
        problems.append(f"{key}: must be a mapping")
        return None, None
    mode = cfg.get("mode")
    if mode not in STS_MODES:
        problems.append(f"{key}:mode: {mode!r} must be one of {', '.join(STS_MODES)}")
        return None, None
    max_age = cfg.get("max_age", DEFAULT_STS_MAX_AGE)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or not (
            0 < max_age <= STS_MAX_AGE_LIMIT):
        problems.append(f"{key}:max_age: {max_age!r} must be 1..{STS_MAX_AGE_LIMIT} seconds "
                        "(RFC 8461 3.2)")
        return None, None
    patterns = []
    for p in _list(cfg.get("mx")) or [m.rstrip(".") for m in mx_names]:
        p = str(p).strip().lower().rstrip(".")
        body = p[2:] if p.startswith("*.") else p
        if not HOSTNAME_RE.match(body + "."):
            problems.append(f"{key}:mx: {p!r} is not a host name or *.domain pattern")
            continue
        patterns.append(p)
    if mode == "enforce":
        for name in mx_names:
            if not any(sts_pattern_matches(p, name) for p in patterns):
                problems.append(f"{key}:mx: MX host {name.rstrip('.')} matches no mx line; in "
                                "enforce mode senders would refuse to deliver to it")
    policy = sts_policy(mode, patterns, max_age)
    return policy, f"v=STSv1; id={sts_id(policy)}"


def mta_sts_policy(domain, data, mx_names=None):
    """
    What a mail host serves at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``:
    ``{"policy": text or None, "record": "v=STSv1; id=...", "problems": [...]}``.

    The same text :func:`build` puts in ``files`` (so the published id matches the file),
    when ``mx_names`` are the MX host names; by default the minion ids under ``hosts``
    (minion ids are the hosts' FQDNs). ``policy`` is None when the domain has no
    ``dns:mta_sts`` or when ``problems`` (each naming its pillar key) is not empty.
    """
    problems = []
    try:
        zone = fqdn(domain)
    except ValueError:
        return {"policy": None, "record": None,
                "problems": [f"mailfleet:domains: {domain!r} is not a domain name"]}
    key = f"mailfleet:domains:{zone.rstrip('.')}:dns:mta_sts"
    cfg = ((data or {}).get("dns") or {}).get("mta_sts")
    if not cfg:
        return {"policy": None, "record": None, "problems": []}
    if mx_names is None:
        mx_names = []
        for host in (data or {}).get("hosts") or []:
            try:
                mx_names.append(fqdn(host))
            except ValueError:
                problems.append(f"mailfleet:domains:{zone.rstrip('.')}:hosts: {host!r} "
                                "is not a host name")
    policy, record = mta_sts_records(zone, key, cfg, [fqdn(m) for m in mx_names], problems)
    if problems:
        return {"policy": None, "record": None, "problems": problems}
    return {"policy": policy, "record": record, "problems": []}


# ---------------------------------------------------------------- DKIM records

def dkim_record(key_type, public_b64):
    """``v=DKIM1; k=rsa; p=...`` (RFC 6376 3.6.1); an empty ``p=`` is a revoked key."""
    return f"v=DKIM1; k={key_type}; p={public_b64 or ''}"


def dkim_records(domain, key, entries, problems):
    """[(name, record or None)]: None for a retired selector that must be absent."""
    out = []
    seen = set()
    for entry in entries or []:
        sel = str(entry.get("selector", "")).lower()
        if not _SELECTOR.match(sel):
            problems.append(f"{key}: selector {sel!r} is not a valid DNS label")
            continue
        if sel in seen:
            problems.append(f"{key}: selector {sel!r} listed twice")
            continue
        seen.add(sel)
        name = f"{sel}._domainkey.{domain}"
        if entry.get("absent"):
            out.append((name, None))
            continue
        ktype = entry.get("k", "rsa")
        pub = entry.get("p") or ""
        if ktype not in ("rsa", "ed25519"):
            problems.append(f"{key}: selector {sel}: key type {ktype!r} is not rsa or ed25519")
            continue
        if pub:
            try:
                raw = base64.b64decode(pub, validate=True) if _B64.match(pub) else None
            except (binascii.Error, ValueError):
                raw = None
            if raw is None:
                problems.append(f"{key}: selector {sel}: public key is not base64")
                continue
            if ktype == "ed25519" and len(raw) != 32:
                problems.append(f"{key}: selector {sel}: an ed25519 public key is 32 bytes "
                                f"(RFC 8463 4), got {len(raw)}")
                continue
        out.append((name, dkim_record(ktype, pub)))
    return out
