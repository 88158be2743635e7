"""
mailfleet DNS records: the RRsets a mail domain needs, built from its pillar and the facts
of the hosts that serve it, and compared with what DNS shows.

One job: pure functions (no ``__salt__``, no network), imported plainly by the publishing
runner (``_runners/mailfleet_dns.py``) and the MTA-STS module (``_modules/mailfleet_dnsrecords.py``);
Salt puts the utils directories on ``sys.path``. Everything starts from :func:`build`.

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
import base64
import binascii
import hashlib
import ipaddress
import re

__virtualname__ = "mailfleet_records"


def __virtual__():
    return __virtualname__


DEFAULT_TTL = 3600
DEFAULT_MX_PRIORITY = 10
DEFAULT_SPF_ALL = "-all"
DEFAULT_STS_MAX_AGE = 604800  # one week
# RFC 8461 section 3.2: max_age "up to 31557600" seconds (one year).
STS_MAX_AGE_LIMIT = 31557600
# RFC 7208 section 4.6.4: at most 10 terms that cause DNS queries.
SPF_LOOKUP_LIMIT = 10
SPF_LOOKUP_MECHANISMS = ("include", "a", "mx", "ptr", "exists")
SPF_LOOKUP_MODIFIERS = ("redirect",)
SPF_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
# RFC 1035 section 3.3: a <character-string> is one length octet and up to 255 octets.
TXT_CHUNK = 255
# RFC 7208 section 3.4: keep the SPF answer under 512 octets; 450 for the record is advised.
SPF_SIZE_ADVICE = 450

DMARC_POLICIES = ("none", "quarantine", "reject")
STS_MODES = ("enforce", "testing", "none")

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME = re.compile(rf"^({_LABEL}\.)+$")
_HOSTNAME = re.compile(rf"^({_HOST_LABEL}\.)+[a-z][a-z0-9-]*\.$")
_SELECTOR = re.compile(rf"^{_HOST_LABEL}(\.{_HOST_LABEL})*$")
_LOCALPART = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+$")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


class RecordError(ValueError):
    """A domain's pillar cannot be turned into records; ``problems`` names each key."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


# ---------------------------------------------------------------- names and TXT strings

def fqdn(name):
    """Absolute, lower-case form of a DNS name: ``Example.COM`` -> ``example.com.``."""
    name = str(name).strip()
    if not name:
        raise ValueError("empty DNS name")
    if not name.isascii():
        try:
            import idna  # salt's requirements bring it

            name = idna.encode(name.rstrip("."), uts46=True).decode("ascii") + "."
        except ImportError:  # pragma: no cover
            name = name.rstrip(".").encode("idna").decode("ascii") + "."
    name = name.lower()
    return name if name.endswith(".") else name + "."


def _is_name(name):
    return bool(_NAME.match(name)) and len(name) <= 254


def _under(name, zone):
    """True when ``name`` equals ``zone`` or lies below it (both absolute)."""
    return name == zone or name.endswith("." + zone)


def txt_chunks(value):
    """
    Split a TXT value into character-strings of at most 255 octets (RFC 1035 3.3).

    Consumers join the strings with nothing between them (DKIM: RFC 6376 3.6.2.2; SPF:
    RFC 7208 3.3), so the split may fall anywhere, even inside a tag.
    """
    data = value.encode("ascii") if isinstance(value, str) else bytes(value)
    if not data:
        return [""]
    return [data[i:i + TXT_CHUNK].decode("ascii") for i in range(0, len(data), TXT_CHUNK)]


def _quote(chunk):
    out = []
    for ch in chunk:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code > 0x7E:
            out.append("\\%03d" % code)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def txt_rdata(value):
    """The zone-file form of one TXT record holding ``value``: ``"chunk1" "chunk2"``."""
    return " ".join(_quote(c) for c in txt_chunks(value))


def txt_strings(rdata):
    """The character-strings of a TXT rdata in zone-file form (quoted or bare words)."""
    strings, i, n = [], 0, len(rdata)
    while i < n:
        ch = rdata[i]
        if ch.isspace() or ch in "()":
            i += 1
            continue
        quoted = ch == '"'
        if quoted:
            i += 1
        buf = bytearray()
        while i < n:
            ch = rdata[i]
            if quoted and ch == '"':
                i += 1
                break
            if not quoted and (ch.isspace() or ch in "()"):
                break
            if ch == "\\" and i + 1 < n:
                if rdata[i + 1:i + 4].isdigit() and len(rdata[i + 1:i + 4]) == 3:
                    buf.append(int(rdata[i + 1:i + 4]))
                    i += 4
                    continue
                buf.extend(rdata[i + 1].encode("latin-1"))
                i += 2
                continue
            buf.extend(ch.encode("latin-1"))
            i += 1
        else:
            if quoted:
                raise ValueError(f"unterminated string in TXT rdata: {rdata!r}")
        strings.append(bytes(buf).decode("latin-1"))
    return strings


def txt_value(rdata):
    """Join a TXT rdata's strings back into one value, with nothing between them."""
    return "".join(txt_strings(rdata))


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
        spf = [v for v in (resolve_txt(target) or []) if _has_prefix(v, "v=spf1")]
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


def _spf(domain, key, cfg, addresses, resolve_txt, problems, warnings):
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
    if not at or not _LOCALPART.match(local) or not _is_name(host_fq) or "!" in local:
        problems.append(f"{key}: {value!r} is not a mail address or mailto: URI")
        return None, None
    return f"mailto:{local}@{host_fq.rstrip('.')}{size}", host_fq


def _list(value):
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [v for v in str(value).split(",") if v.strip()]


def _dmarc(domain, key, cfg, problems):
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
            if not (_under(host, domain) or _under(domain, host)):
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


def _tls_rpt(key, cfg, problems):
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


def _mta_sts(domain, key, cfg, mx_names, problems):
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
        if not _HOSTNAME.match(body + "."):
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
    policy, record = _mta_sts(zone, key, cfg, [fqdn(m) for m in mx_names], problems)
    if problems:
        return {"policy": None, "record": None, "problems": problems}
    return {"policy": policy, "record": record, "problems": []}


# ---------------------------------------------------------------- DKIM records

def dkim_record(key_type, public_b64):
    """``v=DKIM1; k=rsa; p=...`` (RFC 6376 3.6.1); an empty ``p=`` is a revoked key."""
    return f"v=DKIM1; k={key_type}; p={public_b64 or ''}"


def _dkim(domain, key, entries, problems):
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
    if not _is_name(zone) or zone.count(".") < 2:
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
        if not _HOSTNAME.match(name):
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
    spf = _spf(zone, f"{key}:dns:spf", dns.get("spf") or {}, all_addresses, resolve_txt,
               problems, warnings)
    put(zone, "TXT", txt_rdata(spf), prefix="v=spf1")

    # DKIM selectors from the rotation state.
    for name, record in _dkim(zone, f"{key}:dkim", dkim, problems):
        if record is None:
            owned[(name, "TXT")] = None
        else:
            put(name, "TXT", txt_rdata(record))

    # DMARC, and the authorisation of external report domains (RFC 7489 7.1).
    dmarc, auths = _dmarc(zone, f"{key}:dns:dmarc", dns.get("dmarc"), problems)
    put(f"_dmarc.{zone}", "TXT", txt_rdata(dmarc), prefix="v=DMARC1")
    for name, rua_domain, rkey in auths:
        if any(_under(rua_domain, m) for m in managed):
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
        policy, record = _mta_sts(zone, f"{key}:dns:mta_sts", sts, mx_names, problems)
        if policy:
            files["mta-sts.txt"] = policy
            put(f"_mta-sts.{zone}", "TXT", txt_rdata(record), prefix="v=STSv1")
            if sts.get("address_records", True):
                for a in all_addresses:
                    put(f"mta-sts.{zone}", "A" if a.version == 4 else "AAAA", str(a))

    tls = dns.get("tls_rpt")
    if tls:
        record = _tls_rpt(f"{key}:dns:tls_rpt", tls, problems)
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

def _has_prefix(value, prefix):
    """Case-insensitive tag-value prefix: ``v=spf1`` then a space, ``;`` or the end."""
    if not value.lower().startswith(prefix.lower()):
        return False
    rest = value[len(prefix):]
    return not rest or rest[0] in " ;\t"


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
            seen = [r for r in seen if _has_prefix(normalize_rdata(rtype, r), prefix)]
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
                    if any(_has_prefix(normalize_rdata(rtype, r), p) for p in prefixes)]
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
                parts = [_quote(s) for s in txt_strings(rdata)]
                text = f"{name} {ttl} IN TXT ( " + "\n\t".join(parts) + " )"
            else:
                text = f"{name} {ttl} IN {rtype} {rdata}"
            (lines if _under(name, zone) else outside).append(text)
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
