"""
mailfleet virtual users: PostfixAdmin 3.3 rows in MariaDB, synchronised from pillar.

The pillar (``mailfleet:``) is validated as a whole, turned into the rows it declares
(``domain``, ``mailbox``, ``alias``, ``alias_domain``), diffed against what the database
holds and the difference written in ONE transaction, in batches. PostfixAdmin's tables are
never altered: the rows mailfleet manages are recorded in a side table, ``mailfleet_managed``.

Scale (10,000 domains, 100,000 mailboxes: bench/vusers_sync.py): MariaDB digests the rows
and ownership records of every domain (its partition) while Python validates the pillar;
the pillar's rows get the same digests, and only partitions whose digests differ are read
and diffed (see "partition digests" below), so a no-op sync reads no rows at all.

Everything that decides (validation, desired rows, diff, summary) is a plain function
without ``__salt__``/``__pillar__``; the Salt functions at the bottom are thin glue.

Storage rules (PostfixAdmin 3.3): mailbox.username is the full address, maildir
``<domain>/<local>/``, quota in bytes; every mailbox has an alias row address=goto=itself;
a catch-all is the alias ``@<domain>``; booleans are tinyint 1/0; created/modified are
datetimes. domain.maxquota is in MiB (set PostfixAdmin's ``quota_multiplier`` to 1048576
so it agrees), domain.quota (total per domain), aliases and mailboxes limits are written
as 0 (unlimited) when mailfleet creates a domain and left alone after that.

Ownership: a row is managed once the pillar declared it (created or adopted). A managed
row gone from the pillar is deactivated (active=0), never deleted, unless its domain sets
``retention: {purge_after_days: N}`` and it has been inactive for N days: then it is
deleted and, for a mailbox, its maildir moved to ``<vmail>/.archive/<domain>/<local>-<UTC
timestamp>`` (never deleted). Rows mailfleet never managed are left alone, unless
``mailfleet:exclusive`` is true: then they are deactivated (and managed from then on).
"""

import datetime
import functools
import gc
import json
import logging
import math
import os
import re
import shutil
import threading
import time

try:
    import idna as _idna
except ImportError:  # pragma: no cover - idna ships with salt's requirements
    _idna = None

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers"


def __virtual__():
    return __virtualname__


PREFIX = "mailfleet"
DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"
DEFAULT_VMAIL = "/var/vmail"
MANAGED_TABLE = "mailfleet_managed"
SUMMARY_LIMIT = 10
LOCK_NAME = "mailfleet_vusers"

TABLES = ("domain", "mailbox", "alias", "alias_domain")
KEY = {"domain": "domain", "mailbox": "username", "alias": "address", "alias_domain": "alias_domain"}
# Columns mailfleet keeps equal to the pillar; `active` is always last.
MANAGED_COLS = {
    "domain": ("description", "maxquota", "active"),
    "mailbox": ("password", "name", "quota", "local_part", "domain", "active"),
    "alias": ("goto", "domain", "active"),
    "alias_domain": ("target_domain", "active"),
}
# Columns written only when mailfleet inserts the row (an adopted row keeps its own).
INSERT_COLS = {
    "domain": ("aliases", "mailboxes", "quota", "transport", "backupmx"),
    "mailbox": ("maildir",),
    "alias": (),
    "alias_domain": (),
}
DOMAIN_INSERT_DEFAULTS = (0, 0, 0, "virtual", 0)  # unlimited aliases/mailboxes/quota
# Rows never touched, whatever `exclusive` says (PostfixAdmin's superadmin pseudo-domain).
PROTECTED = {("domain", "all")}

SCHEMES = ("ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT")
_SCHEME_HINT = "use a {SCHEME} hash (ARGON2ID, SHA512-CRYPT, BLF-CRYPT)"
_HASH_RE = {
    # Dovecot's ARGON2ID: PHC string format
    "ARGON2ID": re.compile(
        r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}"
    ),
    # glibc crypt(3) SHA-512: optional rounds=, salt <= 16, 86-char hash
    "SHA512-CRYPT": re.compile(r"\$6\$(?:rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}"),
    # bcrypt: cost 2 digits, 22-char salt + 31-char hash
    "BLF-CRYPT": re.compile(r"\$2[abxy]\$\d\d\$[./A-Za-z0-9]{53}"),
}
_PLAIN_SCHEMES = {"PLAIN", "CLEARTEXT", "CLEAR", "PLAIN-TRUNC"}
_SCHEME_RE = re.compile(r"\{([A-Za-z0-9._-]+)\}(.*)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# RFC 5322 dot-atom, ASCII only (no SMTPUTF8 local parts); ',' can never appear, so a
# goto list stays unambiguous.
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_QUOTA_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([BKMGT]?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
MIB = 1024**2
BIGINT_MAX = 2**63 - 1  # mailbox.quota, domain.maxquota: bigint(20)


class ValidationError(Exception):
    """The pillar is invalid: ``errors`` lists every problem, each naming its pillar path."""

    def __init__(self, errors, warnings=()):
        self.errors = list(errors)
        self.warnings = list(warnings)
        super().__init__("\n".join(self.errors))


class _Report:
    """Ordered, de-duplicated errors and warnings."""

    def __init__(self):
        self.errors = {}
        self.warnings = {}

    def error(self, path, msg):
        self.errors.setdefault(f"{path}: {msg}", None)

    def warn(self, path, msg):
        self.warnings.setdefault(f"{path}: {msg}", None)


# --------------------------------------------------------------------------- parsing


# Pure functions of one string, called 100,000 times with a handful of distinct values
# (quotas, local parts): their valid answers are remembered (errors are not).
_MEMO_MAX = 1 << 16
_QUOTA_MEMO = {}
_LOCAL_MEMO = {}


def parse_quota(value):
    """Quota in bytes from an int (bytes) or a string with unit B, K, M, G or T (binary
    multiples). 0 means unlimited. Raises ValueError."""
    kind = type(value)
    if kind is str:
        nbytes = _QUOTA_MEMO.get(value)
        if nbytes is None:
            nbytes = _parse_quota(value)
            if len(_QUOTA_MEMO) < _MEMO_MAX:
                _QUOTA_MEMO[value] = nbytes
        return nbytes
    if kind is int and value >= 0:
        return value
    return _parse_quota(value)


def _parse_quota(value):
    if isinstance(value, bool) or value is None:
        raise ValueError(f"invalid quota {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid quota {value!r}: negative")
        return value
    if isinstance(value, float):
        raise ValueError(f"invalid quota {value!r}: a fraction of a byte; add a unit")
    if isinstance(value, str):
        m = _QUOTA_RE.fullmatch(value)
        if m:
            number, unit = m.group(1), m.group(2).upper()
            if "." in number and unit in ("", "B"):
                raise ValueError(f"invalid quota {value!r}: a fraction of a byte")
            return int(round(float(number) * _UNITS[unit]))
    raise ValueError(f"invalid quota {value!r}; use a number with unit B, K, M, G or T (0 = unlimited)")


def format_quota(nbytes):
    for unit in ("T", "G", "M", "K"):
        if nbytes and nbytes % _UNITS[unit] == 0:
            return f"{nbytes // _UNITS[unit]}{unit}"
    return f"{nbytes}B"


_LDH_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_PLAIN_NAME = re.compile(rf"(?:{_LDH_LABEL}\.)+{_LDH_LABEL}")


def idna_domain(name):
    """The ASCII (punycode, lower case) form of a domain name; ValueError when invalid."""
    if isinstance(name, str):
        low = name.lower()
        # fast path, same answer: plain LDH names without any '--' are their own A-label
        if (low.isascii() and "--" not in low and len(low) <= 253 and _PLAIN_NAME.fullmatch(low)
                and not low.rpartition(".")[2].isdigit()):
            return low
    return _idna_domain(name)


@functools.lru_cache(maxsize=65536)
def _idna_domain(name):
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid domain name {name!r}")
    if name.endswith(".") or ".." in name or name.startswith("."):
        raise ValueError(f"invalid domain name {name!r}: empty label")
    if _idna is not None:
        try:
            ascii_name = _idna.encode(name, uts46=True).decode("ascii")
        except (_idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"invalid domain name {name!r} (IDNA: {exc})") from None
    else:  # pragma: no cover - IDNA 2003 fallback
        try:
            ascii_name = name.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"invalid domain name {name!r} (IDNA: {exc})") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(labels) < 2:
        raise ValueError(f"invalid domain name {name!r}: needs at least two labels")
    if len(ascii_name) > 253:
        raise ValueError(f"invalid domain name {name!r}: longer than 253 characters")
    for label in labels:
        if not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", label):
            raise ValueError(f"invalid domain name {name!r}: bad label {label!r}")
    if labels[-1].isdigit():
        raise ValueError(f"invalid domain name {name!r}: numeric top-level label")
    return ascii_name


def check_local_part(local):
    """The lower-cased local part; ValueError when not an ASCII dot-atom of <= 64 chars."""
    low = _LOCAL_MEMO.get(local) if type(local) is str else None
    if low is None:
        low = _check_local_part(local)
        if len(_LOCAL_MEMO) < _MEMO_MAX:
            _LOCAL_MEMO[local] = low
    return low


def _check_local_part(local):
    if not isinstance(local, str) or not local:
        raise ValueError(f"invalid local part {local!r}: empty")
    if len(local) > 64:
        raise ValueError(f"invalid local part {local!r}: longer than 64 characters")
    if not _LOCAL_RE.fullmatch(local):
        raise ValueError(f"invalid local part {local!r}: not an ASCII dot-atom (RFC 5322)")
    return local.lower()


_PLAIN_ADDR = re.compile(rf"({_LOCAL_RE.pattern})@({_PLAIN_NAME.pattern})", re.IGNORECASE)


def parse_address(addr):
    """(local, ascii_domain) of an address ``local@domain``; ValueError when invalid."""
    m = _PLAIN_ADDR.fullmatch(addr) if isinstance(addr, str) else None
    if m and len(m.group(1)) <= 64:
        dom = m.group(2).lower()
        # fast path, same answer as below: plain ASCII, no '--' label, non-numeric TLD
        if "--" not in dom and len(dom) <= 253 and not dom.rpartition(".")[2].isdigit():
            return m.group(1).lower(), dom
    if not isinstance(addr, str) or "@" not in addr:
        raise ValueError(f"invalid address {addr!r}: expected local@domain")
    local, _, dom = addr.strip().rpartition("@")
    return check_local_part(local), idna_domain(dom)


# every well-formed hash in one pattern (the upper-case scheme names): the common case
_HASH_OK = re.compile("|".join(rf"\{{{re.escape(scheme)}\}}(?:{_HASH_RE[scheme].pattern})" for scheme in SCHEMES))


def check_password(value):
    """None when ``value`` is a {SCHEME}-prefixed hash Dovecot verifies, else the reason.
    Never echoes the value (it is a secret)."""
    if type(value) is str and _HASH_OK.fullmatch(value):
        return None
    if not isinstance(value, str) or not value:
        return f"missing password; {_SCHEME_HINT}"
    m = _SCHEME_RE.fullmatch(value)
    if not m:
        if value.startswith("$") and any(r.fullmatch(value) for r in _HASH_RE.values()):
            return f"hash without {{SCHEME}} prefix; {_SCHEME_HINT}"
        return f"plaintext password refused; {_SCHEME_HINT}"
    scheme, body = m.group(1).upper(), m.group(2)
    if scheme in _PLAIN_SCHEMES:
        return f"plaintext password refused; {_SCHEME_HINT}"
    if scheme not in SCHEMES:
        return f"password scheme {{{m.group(1)}}} refused; {_SCHEME_HINT}"
    if not _HASH_RE[scheme].fullmatch(body):
        return f"malformed {{{scheme}}} hash"
    return None


def _text(value, path, report, field, maxlen=255, default=""):
    if type(value) is str and len(value) <= maxlen and value.isprintable():
        return value  # printable: no control characters
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        report.error(f"{path}:{field}", f"must be a string, not {type(value).__name__}")
        return default
    if len(value) > maxlen:
        report.error(f"{path}:{field}", f"longer than {maxlen} characters")
    if _CONTROL.search(value):
        report.error(f"{path}:{field}", "control characters not allowed")
    return value


def _bmp_text(value, path, report, field):
    # domain.description is a utf8mb3 column in PostfixAdmin 3.3.13: no 4-byte characters
    value = _text(value, path, report, field)
    if any(ord(c) > 0xFFFF for c in value):
        report.error(f"{path}:{field}", "characters outside the Basic Multilingual Plane (PostfixAdmin's column is utf8mb3)")
    return value


def _bool(value, path, report, default=True):
    if value is None:
        return default
    if not isinstance(value, bool):
        report.error(path, f"must be true or false, not {value!r}")
        return default
    return value


# ------------------------------------------------------------------------ validation


def validate_pillar(cfg):
    """Validate the ``mailfleet`` pillar dict as a whole.

    Returns ``(model, errors, warnings)``; ``errors`` and ``warnings`` are lists of
    ``"<pillar path>: <message>"``. ``model`` is the normalised pillar (punycode domain
    names, lower-case local parts, quotas in bytes, implicit postmaster@/abuse@ aliases
    added); it is only meaningful when ``errors`` is empty.
    """
    rep = _Report()
    model = {"exclusive": False, "postmaster": None, "domains": {}}
    if not isinstance(cfg, dict):
        rep.error(PREFIX, "missing or not a mapping")
        return model, list(rep.errors), list(rep.warnings)

    model["exclusive"] = _bool(cfg.get("exclusive"), f"{PREFIX}:exclusive", rep, default=False)

    pm_raw = cfg.get("postmaster")
    pm = None
    if pm_raw is not None:
        try:
            pm = "%s@%s" % parse_address(pm_raw)
        except ValueError as exc:
            rep.error(f"{PREFIX}:postmaster", str(exc))
    model["postmaster"] = pm

    domains_raw = cfg.get("domains")
    if domains_raw is None:
        rep.error(f"{PREFIX}:domains", "missing (an empty mapping {} declares no domains)")
        domains_raw = {}
    elif not isinstance(domains_raw, dict):
        rep.error(f"{PREFIX}:domains", "must be a mapping of domain name to settings")
        domains_raw = {}

    domains = model["domains"]
    alias_domain_owner = {}  # alias domain -> (path, target domain)
    for dkey, dcfg in domains_raw.items():
        dpath = f"{PREFIX}:domains:{dkey}"
        try:
            dom = idna_domain(str(dkey))
        except ValueError as exc:
            rep.error(dpath, str(exc))
            continue
        if dom in domains:
            rep.error(dpath, f"duplicate domain {dom} (also {domains[dom]['path']})")
            continue
        if dcfg is None:
            dcfg = {}
        if not isinstance(dcfg, dict):
            rep.error(dpath, "must be a mapping")
            continue
        dcfg = _unpacked(dcfg, dpath, rep)
        domains[dom] = d = _validate_domain(dom, dpath, dcfg, rep)
        for adom, apath in d["alias_domains"].items():
            if adom in alias_domain_owner:
                rep.error(apath, f"alias domain {adom} also declared at {alias_domain_owner[adom][0]}")
            else:
                alias_domain_owner[adom] = (apath, dom)

    for adom, (apath, target) in alias_domain_owner.items():
        if adom == target:
            rep.error(apath, f"alias domain {adom} points at itself")
        elif adom in domains:
            rep.error(apath, f"alias domain {adom} is also a real domain ({domains[adom]['path']})")

    # postmaster@ and abuse@ (RFC 2142) for every domain that does not declare them
    lacking = []
    for dom, d in domains.items():
        for local in ("postmaster", "abuse"):
            if local in d["mailboxes"] or local in d["aliases"]:
                continue
            if pm is None:
                lacking.append((f"{local}@{dom}", d["path"]))
                continue
            d["aliases"][local] = {
                "path": f"{d['path']}:aliases:{local} (implicit, from {PREFIX}:postmaster)",
                "targets": [pm],
                "target_paths": [f"{PREFIX}:postmaster"],
                "implicit": True,
            }

    if lacking and pm_raw is None:
        more = f" and {len(lacking) - 1} more" if len(lacking) > 1 else ""
        rep.error(f"{PREFIX}:postmaster", f"missing; needed for {lacking[0][0]} ({lacking[0][1]} does not declare it){more}")

    _check_targets(model, {a: t for a, (p, t) in alias_domain_owner.items()}, rep)
    return model, list(rep.errors), list(rep.warnings)


PACKED_KEY = "packed_json"  # set by the mailfleet_domains ext_pillar at hosting size


def _unpacked(dcfg, dpath, rep):
    """The domain's data with ``mailboxes`` and ``aliases`` back from the JSON string the
    ext_pillar packs them into for a host that receives many (see _pillar/mailfleet_domains)."""
    text = dcfg.get(PACKED_KEY)
    if text is None:
        return dcfg
    try:
        inner = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        rep.error(f"{dpath}:{PACKED_KEY}", f"not valid JSON ({exc}); reserved for the mailfleet_domains ext_pillar")
        return dcfg
    if not isinstance(inner, dict):
        rep.error(f"{dpath}:{PACKED_KEY}", "must be a JSON object; reserved for the mailfleet_domains ext_pillar")
        return dcfg
    both = sorted(k for k in inner if k in dcfg)
    if both:
        rep.error(f"{dpath}:{PACKED_KEY}", f"{', '.join(both)} given both packed and as written")
        return dcfg
    out = {k: v for k, v in dcfg.items() if k != PACKED_KEY}
    out.update(inner)
    return out


def _validate_domain(dom, dpath, dcfg, rep):
    d = {
        "path": dpath,
        "description": _bmp_text(dcfg.get("description"), dpath, rep, "description"),
        "active": _bool(dcfg.get("active"), f"{dpath}:active", rep),
        "quota": 0,
        "maxquota": 0,
        "hosts": None,
        "retention": None,
        "mailboxes": {},
        "aliases": {},
        "alias_domains": {},
    }
    # other keys (dkim, dns, tls, ...) belong to other concerns of the same domain file
    hosts = dcfg.get("hosts")
    if hosts is not None:
        if isinstance(hosts, str):
            hosts = [hosts]
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            rep.error(f"{dpath}:hosts", "must be a list of minion ids")
        else:
            d["hosts"] = [h.lower() for h in hosts]
    for field in ("quota", "maxquota"):
        if dcfg.get(field) is not None:
            try:
                d[field] = parse_quota(dcfg[field])
            except ValueError as exc:
                rep.error(f"{dpath}:{field}", str(exc))
    if d["maxquota"] and not d["quota"]:
        rep.error(f"{dpath}:quota", f"unlimited (0) default mailbox quota exceeds maxquota {format_quota(d['maxquota'])}")
    elif d["maxquota"] and d["quota"] > d["maxquota"]:
        rep.error(f"{dpath}:quota", f"{format_quota(d['quota'])} exceeds maxquota {format_quota(d['maxquota'])}")
    for field in ("quota", "maxquota"):
        if d[field] > BIGINT_MAX:
            rep.error(f"{dpath}:{field}", "too large")

    ret = dcfg.get("retention")
    if ret is not None:
        if not isinstance(ret, dict):
            rep.error(f"{dpath}:retention", "must be a mapping (purge_after_days: N)")
        else:
            days = ret.get("purge_after_days")
            if days is not None:
                if isinstance(days, bool) or not isinstance(days, int) or days < 0:
                    rep.error(f"{dpath}:retention:purge_after_days", f"must be a whole number of days >= 0, not {days!r}")
                else:
                    d["retention"] = days
            for k in ret:
                if k != "purge_after_days":
                    rep.error(f"{dpath}:retention:{k}", "unknown setting (only purge_after_days)")

    # mailboxes
    mailboxes = dcfg.get("mailboxes") or {}
    if not isinstance(mailboxes, dict):
        rep.error(f"{dpath}:mailboxes", "must be a mapping of local part to settings")
        mailboxes = {}
    d_mailboxes, d_quota, d_maxquota = d["mailboxes"], d["quota"], d["maxquota"]
    room = 254 - len(dom)  # longest local part that keeps the address within 255 characters
    for mkey, mcfg in mailboxes.items():
        mpath = f"{dpath}:mailboxes:{mkey}"
        local = None
        if type(mkey) is str and "@" not in mkey and mkey:
            try:
                local = check_local_part(mkey)
            except ValueError:
                pass  # _local_in_domain reports it
        if local is None:
            local = _local_in_domain(str(mkey), dom, mpath, rep, allow_catchall=False)
            if local is None:
                continue
        if local in d_mailboxes:
            rep.error(mpath, f"duplicate mailbox {local}@{dom} (also {d_mailboxes[local]['path']})")
            continue
        if mcfg is None:
            mcfg = {}
        if not isinstance(mcfg, dict):
            rep.error(mpath, "must be a mapping (name, password, quota, active)")
            continue
        pw = mcfg.get("password")
        why = check_password(pw)
        if why:
            rep.error(f"{mpath}:password", why)
        quota = d_quota
        mquota = mcfg.get("quota")
        if mquota is not None:
            try:
                quota = parse_quota(mquota)
            except ValueError as exc:
                rep.error(f"{mpath}:quota", str(exc))
            else:
                if d_maxquota and (quota == 0 or quota > d_maxquota):
                    rep.error(f"{mpath}:quota", f"{format_quota(quota) if quota else 'unlimited (0)'} exceeds the domain's maxquota {format_quota(d_maxquota)}")
        if quota > BIGINT_MAX:
            rep.error(f"{mpath}:quota", "too large")
        name = _text(mcfg.get("name"), mpath, rep, "name")  # utf8mb4 column (upgrade 1845)
        if len(local) > room:
            rep.error(mpath, "address longer than 255 characters")
        active = mcfg.get("active")
        if active is None:
            active = True
        elif active is not True and active is not False:
            active = _bool(active, f"{mpath}:active", rep)
        d_mailboxes[local] = {
            "path": mpath,
            "password": pw if isinstance(pw, str) else "",
            "name": name,
            "quota": quota,
            "active": active,
        }

    # aliases
    aliases = dcfg.get("aliases") or {}
    if not isinstance(aliases, dict):
        rep.error(f"{dpath}:aliases", "must be a mapping of local part to a list of targets")
        aliases = {}
    d_aliases = d["aliases"]
    for akey, targets in aliases.items():
        apath = f"{dpath}:aliases:{akey}"
        local = None
        if type(akey) is str and "@" not in akey and akey:
            try:
                local = check_local_part(akey)
            except ValueError:
                pass  # _local_in_domain reports it
        if local is None:
            local = _local_in_domain(str(akey), dom, apath, rep, allow_catchall=True)
            if local is None:
                continue
        if local in d_mailboxes:
            rep.error(apath, f"alias {local}@{dom} is also a mailbox ({d_mailboxes[local]['path']})")
            continue
        if local in d_aliases:
            rep.error(apath, f"duplicate alias {local}@{dom} (also {d_aliases[local]['path']})")
            continue
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            rep.error(apath, "must be a non-empty list of target addresses")
            continue
        norm, tpaths = [], []
        for i, t in enumerate(targets):
            tpath = f"{apath}[{i}]"
            addr = None
            if type(t) is str:
                tl, _, td = t.rpartition("@")
                if td == dom:  # inside this domain (its canonical form): parse_address's answer
                    try:
                        addr = f"{check_local_part(tl)}@{dom}"
                    except ValueError:
                        pass  # parse_address says why
            if addr is None:
                try:
                    tl, td = parse_address(t)
                except ValueError as exc:
                    rep.error(tpath, str(exc))
                    continue
                addr = f"{tl}@{td}"
            if addr not in norm:
                norm.append(addr)
                tpaths.append(tpath)
        if len(",".join(norm)) > 65535:
            rep.error(apath, "too many targets (goto longer than 65535 bytes)")
        d_aliases[local] = {"path": apath, "targets": norm, "target_paths": tpaths, "implicit": False}

    # alias domains
    adoms = dcfg.get("alias_domains") or []
    if isinstance(adoms, str):
        adoms = [adoms]
    if not isinstance(adoms, list):
        rep.error(f"{dpath}:alias_domains", "must be a list of domain names")
        adoms = []
    for i, a in enumerate(adoms):
        apath = f"{dpath}:alias_domains[{i}]"
        try:
            adom = idna_domain(str(a))
        except ValueError as exc:
            rep.error(apath, str(exc))
            continue
        if adom in d["alias_domains"]:
            rep.error(apath, f"duplicate alias domain {adom}")
            continue
        d["alias_domains"][adom] = apath
    return d


def _local_in_domain(key, dom, path, rep, allow_catchall):
    """Local part of a mailbox/alias key: ``local``, ``local@<this domain>`` or (aliases)
    ``@`` / ``@<this domain>`` for the catch-all ('' is returned for it)."""
    local = key
    if key == "@":
        local = ""
    elif "@" in key:
        local, _, kdom = key.rpartition("@")
        try:
            kdom_ascii = idna_domain(kdom)
        except ValueError as exc:
            rep.error(path, str(exc))
            return None
        if kdom_ascii != dom:
            rep.error(path, f"address {key} is not inside domain {dom}")
            return None
        if local == "" and not allow_catchall:
            rep.error(path, "a catch-all (@) cannot be a mailbox")
            return None
    if local == "":
        if allow_catchall:
            return ""
        rep.error(path, "empty local part")
        return None
    try:
        return check_local_part(local)
    except ValueError as exc:
        rep.error(path, str(exc))
        return None


def _check_targets(model, alias_domains, rep):
    """Alias targets exist (error inside our domains, warning outside) and no loops."""
    domains = model["domains"]
    ours = set(domains) | set(alias_domains)
    mailboxes = set()
    aliases = {}  # address -> (targets, path, target_paths)
    for dom, d in domains.items():
        at_dom = "@" + dom
        mailboxes.update([local + at_dom for local in d["mailboxes"]])
        for local, a in d["aliases"].items():
            aliases[local + at_dom] = a

    edges = {}  # alias address -> [alias addresses it expands to]
    for addr, a in aliases.items():
        out = []
        for t, tpath in zip(a["targets"], a["target_paths"]):
            # targets are normalised "local@domain": resolved through an alias domain
            local, _, dom = t.rpartition("@")
            r = t
            if dom in alias_domains:
                dom = alias_domains[dom]
                r = f"{local}@{dom}" if local else f"@{dom}"
            where = tpath
            if r in mailboxes:
                continue
            if r in aliases:
                out.append(r)
                continue
            if dom in ours:
                if f"@{dom}" in aliases:
                    rep.warn(where, f"target {t} has no mailbox or alias; only the catch-all @{dom} receives it")
                    out.append(f"@{dom}")
                else:
                    rep.error(where, f"target {t} does not exist (no mailbox or alias {r} declared)")
            else:
                rep.warn(where, f"target {t} is external (not checked)")
        edges[addr] = out

    # iterative DFS; a back edge is a loop
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(edges, WHITE)
    reported = set()
    for start in edges:
        if colour[start] != WHITE:
            continue
        if not edges[start]:  # expands to mailboxes and external addresses only
            colour[start] = BLACK
            continue
        stack = [(start, iter(edges[start]))]
        colour[start] = GREY
        onpath = [start]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                onpath.pop()
                continue
            c = colour.get(nxt, BLACK)
            if c == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(edges[nxt])))
                onpath.append(nxt)
            elif c == GREY:
                cycle = onpath[onpath.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    rep.error(aliases[nxt]["path"], "alias loop: " + " -> ".join(cycle))


# -------------------------------------------------------------------- desired rows


def desired_rows(model, host=None):
    """Rows the pillar declares, per table: ``{table: {key: (managed, insert_only)}}``
    with the column order of MANAGED_COLS / INSERT_COLS.

    ``host``: when given, domains whose ``hosts`` list does not name it are not served
    here and declare nothing. Returns ``(desired, retention)``: retention maps every
    pillar domain (and alias domain) to its purge_after_days (or None)."""
    desired = {t: {} for t in TABLES}
    domains, mailboxes, aliases, alias_domains = (desired[t] for t in TABLES)
    retention = {}
    host = host.lower() if isinstance(host, str) else None
    for dom, d in model["domains"].items():
        retention[dom] = d["retention"]
        for adom in d["alias_domains"]:
            retention[adom] = d["retention"]
        if host is not None and d["hosts"] is not None and host not in d["hosts"]:
            continue
        domains[dom] = (
            (d["description"], math.ceil(d["maxquota"] / MIB) if d["maxquota"] else 0, int(d["active"])),
            DOMAIN_INSERT_DEFAULTS,
        )
        at_dom = "@" + dom
        for local, m in d["mailboxes"].items():
            addr = local + at_dom
            active = int(m["active"])
            mailboxes[addr] = ((m["password"], m["name"], m["quota"], local, dom, active), (f"{dom}/{local}/",))
            aliases[addr] = ((addr, dom, active), ())
        for local, a in d["aliases"].items():
            aliases[local + at_dom] = ((",".join(a["targets"]), dom, 1), ())  # "" + at_dom: the catch-all
        for adom in d["alias_domains"]:
            alias_domains[adom] = ((dom, int(d["active"])), ())
    return desired, retention


# ---------------------------------------------------------------------------- diff


def _cmp_form(table, managed):
    """Comparable form of a managed-column tuple (DB and pillar alike)."""
    if table == "alias":
        goto, dom, active = managed
        return (frozenset(t.strip().lower() for t in (goto or "").split(",") if t.strip()), (dom or "").lower(), int(active))
    if table == "mailbox":
        pw, name, quota, local, dom, active = managed
        return (pw or "", name or "", int(quota or 0), (local or "").lower(), (dom or "").lower(), int(active))
    if table == "domain":
        desc, maxq, active = managed
        return (desc or "", int(maxq or 0), int(active))
    target, active = managed
    return ((target or "").lower(), int(active))


def _row_domain(table, key, managed):
    if table == "domain":
        return key
    if table == "alias_domain":
        return (managed[0] or "").lower()
    return (managed[-2] or "").lower()


class Diff:
    """What a sync changes. Keys are lower-case; see summarize() for a readable form."""

    def __init__(self, now):
        self.now = now
        self.insert = {t: [] for t in TABLES}  # [(key, managed, insert_only)]
        self.update = {t: [] for t in TABLES}  # [(key, managed, insert_only, [changed columns])]
        self.deactivate = {t: [] for t in TABLES}  # [key]
        self.purge = {t: [] for t in TABLES}  # [key]
        self.adopt = {t: [] for t in TABLES}  # [key] existing rows mailfleet takes over
        self.archive = []  # [(username, maildir relative, archive relative)]
        self.managed_upsert = []  # [(tbl, item, domain, deactivated, purge_after_days)]
        self.managed_delete = []  # [(tbl, item)]
        self.notes = []  # things worth saying (purges held back, ...)

    @property
    def empty(self):
        return not (
            any(self.insert.values()) or any(self.update.values()) or any(self.deactivate.values())
            or any(self.purge.values()) or self.managed_upsert or self.managed_delete
        )

    def counts(self):
        out = {}
        for kind in ("insert", "update", "deactivate", "purge", "adopt"):
            for t in TABLES:
                n = len(getattr(self, kind)[t])
                if n:
                    out.setdefault(t, {})[kind] = n
        if self.archive:
            out["maildir"] = {"archive": len(self.archive)}
        return out


def _archive_rel(dom, local, now):
    return f".archive/{dom}/{local}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def _safe_rel(path):
    if not path or path.startswith("/") or "\\" in path:
        return False
    parts = [p for p in path.split("/") if p]
    return bool(parts) and all(p not in (".", "..") for p in parts) and not parts[0].startswith(".")


def compute_diff(desired, current, managed, now, exclusive=False, retention=None):
    """Diff the desired rows against the database.

    desired:  ``{table: {key: (managed, insert_only)}}`` from desired_rows()
    current:  same shape, read from the database (keys lower-cased)
    managed:  ``{(table, key): (domain, deactivated, purge_after_days)}``
    now:      the database's NOW() (datetime)
    exclusive: rows never managed may be deactivated too
    retention: ``{domain: purge_after_days or None}`` from the pillar
    """
    retention = retention or {}
    diff = Diff(now)
    for t in TABLES:
        want, have = desired[t], current[t]
        for key, (m, ins) in want.items():
            cur = have.get(key)
            if cur is None:
                diff.insert[t].append((key, m, ins))
            elif cur[0] != m:  # equal tuples: the common case, no normalising needed
                a, b = _cmp_form(t, cur[0]), _cmp_form(t, m)
                if a != b:
                    changed = [c for c, x, y in zip(MANAGED_COLS[t], a, b) if x != y]
                    diff.update[t].append((key, m, ins, changed))
            dom = _row_domain(t, key, m)
            entry = (dom, None, retention.get(dom))
            old = managed.get((t, key))
            if old is None:
                if cur is not None:
                    diff.adopt[t].append(key)
                diff.managed_upsert.append((t, key) + entry)
            elif old != entry:
                diff.managed_upsert.append((t, key) + entry)

        for key, (m, ins) in have.items():
            if key in want or (t, key) in PROTECTED:
                continue
            old = managed.get((t, key))
            if old is None and not exclusive:
                continue
            dom = old[0] if old is not None else _row_domain(t, key, m)
            days = retention.get(dom, old[2] if old is not None else None)
            deactivated = old[1] if old is not None else None
            active = int(m[-1])
            if active:
                diff.deactivate[t].append(key)
                deactivated = now
            elif deactivated is None:
                deactivated = now  # inactive, but not by us: the retention clock starts now
            elif days is not None and now - deactivated >= datetime.timedelta(days=days):
                diff.purge[t].append(key)
                continue
            if old != (dom, deactivated, days):
                diff.managed_upsert.append((t, key, dom, deactivated, days))

    for (t, key) in managed:
        if key not in current[t] and key not in desired[t]:
            diff.managed_delete.append((t, key))

    # a purged mailbox's maildir is archived, never deleted
    keep = []
    for key in diff.purge["mailbox"]:
        m, ins = current["mailbox"][key]
        local, dom, maildir = m[3] or key.partition("@")[0], m[4] or key.partition("@")[2], ins[0]
        if not _safe_rel(maildir or ""):
            diff.notes.append(f"mailbox {key}: maildir {maildir!r} is not a plain relative path; not purged")
            continue
        diff.archive.append((key, maildir, _archive_rel(dom.lower(), local.lower(), now)))
        keep.append(key)
    diff.purge["mailbox"] = keep

    # a domain is purged only when nothing that stays refers to it
    if diff.purge["domain"]:
        gone = {t: set(diff.purge[t]) for t in TABLES}
        used = set()
        for t in ("mailbox", "alias", "alias_domain"):
            for key, (m, ins) in current[t].items():
                if key not in gone[t]:
                    used.add(_row_domain(t, key, m))
        for m, _ in desired["alias_domain"].values():
            used.add(m[0])
        held = [d for d in diff.purge["domain"] if d in used]
        for d in held:
            diff.notes.append(f"domain {d}: rows still refer to it; not purged")
        diff.purge["domain"] = [d for d in diff.purge["domain"] if d not in used]

    for t in TABLES:
        for key in diff.purge[t]:
            diff.managed_delete.append((t, key))
    return diff


def summarize(diff, limit=SUMMARY_LIMIT, full=False):
    """A readable summary: per table and kind, the count and the first ``limit`` keys
    (``items``: all of them, with ``full``). Updates name the changed columns, never
    their values (a password hash is a secret)."""
    out = {}

    def put(table, kind, items, render=lambda x: x):
        if items:
            shown = items if full else items[:limit]
            out.setdefault(table, {})[kind] = {"count": len(items), "items" if full else "first": [render(i) for i in shown]}

    for t in TABLES:
        put(t, "insert", diff.insert[t], lambda i: i[0])
        put(t, "update", diff.update[t], lambda i: f"{i[0]} ({', '.join(i[3])})")
        put(t, "deactivate", diff.deactivate[t])
        put(t, "purge", diff.purge[t])
        put(t, "adopt", diff.adopt[t])
    put("maildir", "archive", diff.archive, lambda i: f"{i[1]} -> {i[2]}")
    if diff.notes:
        out["notes"] = diff.notes if full else diff.notes[:limit]
    return out


def describe(diff):
    """One line: counts of what the diff does."""
    parts = []
    for kind, label in (("insert", "insert"), ("update", "update"), ("deactivate", "deactivation"), ("purge", "purge")):
        n = sum(len(v) for v in getattr(diff, kind).values())
        if n:
            per = ", ".join(f"{t} {len(v)}" for t, v in getattr(diff, kind).items() if v)
            parts.append(f"{n} {label}{'s' if n != 1 else ''} ({per})")
    if diff.archive:
        parts.append(f"{len(diff.archive)} maildir archive{'s' if len(diff.archive) != 1 else ''}")
    n = sum(len(v) for v in diff.adopt.values())
    if n:
        parts.append(f"{n} existing row{'s' if n != 1 else ''} adopted")
    if not parts and (diff.managed_upsert or diff.managed_delete):
        parts.append(f"{len(diff.managed_upsert) + len(diff.managed_delete)} ownership record updates")
    return "; ".join(parts) if parts else "no changes"


# ------------------------------------------------------------------------ database

# The ownership side table. PostfixAdmin's own tables are never altered.
MANAGED_DDL = f"""CREATE TABLE IF NOT EXISTS `{MANAGED_TABLE}` (
  `tbl` varchar(20) CHARACTER SET ascii NOT NULL,
  `item` varchar(255) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL,
  `domain` varchar(255) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL DEFAULT '',
  `since` datetime NOT NULL,
  `deactivated` datetime DEFAULT NULL,
  `purge_after_days` int(10) unsigned DEFAULT NULL,
  PRIMARY KEY (`tbl`,`item`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COMMENT='mailfleet: PostfixAdmin rows managed from pillar'"""


class SyncError(Exception):
    """The database refused or lost the sync; the transaction was rolled back."""


DB_DEFAULTS = {"name": "postfix", "host": "localhost", "sync_user": "mailfleet_sync"}  # = the formula's


def db_settings(db, socket=None):
    """``(settings, errors)`` of ``mailfleet:db``: the formula's defaults (name postfix,
    host localhost, sync_user mailfleet_sync; ``socket`` when the pillar names none)
    under the pillar's values. sync_password is required."""
    path = f"{PREFIX}:db"
    if not isinstance(db, dict):
        return None, [f"{path}: missing or not a mapping (name, host, sync_user, sync_password)"]
    settings = dict(DB_DEFAULTS)
    settings.update({k: val for k, val in db.items() if val is not None})
    if socket and not settings.get("socket"):
        settings["socket"] = socket
    errors = []
    for k in ("name", "host", "sync_user", "sync_password"):
        if not isinstance(settings.get(k), str) or not settings[k]:
            errors.append(f"{path}:{k}: missing" if settings.get(k) in (None, "") else f"{path}:{k}: must be a string")
    if settings.get("port") is not None and (isinstance(settings["port"], bool) or not isinstance(settings["port"], int)):
        errors.append(f"{path}:port: must be a number")
    return settings, errors


def validate_db(db):
    """Errors of the ``mailfleet:db`` settings (connection parameters)."""
    return db_settings(db)[1]


def connect(db, connect_timeout=10):
    """A PyMySQL connection (autocommit off) from the ``mailfleet:db`` settings.

    ``host: localhost`` (the default) or a path means the unix socket (``socket:``,
    default /run/mysqld/mysqld.sock); anything else is TCP (``port:``, default 3306)."""
    import pymysql

    kw = {
        "user": db["sync_user"],
        "password": db.get("sync_password") or "",
        "database": db["name"],
        "charset": "utf8mb4",
        "autocommit": False,
        "connect_timeout": connect_timeout,
    }
    host = db.get("host") or "localhost"
    if db.get("socket") or host == "localhost" or host.startswith("/"):
        kw["unix_socket"] = db.get("socket") or (host if host.startswith("/") else DEFAULT_SOCKET)
        kw["ssl_disabled"] = True  # nothing to encrypt on a local socket; saves a CA-store load
    else:
        kw["host"] = host
        kw["port"] = int(db.get("port") or 3306)
    return pymysql.connect(**kw)


def managed_table_exists(conn):
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES LIKE %s", (MANAGED_TABLE,))
        return cur.fetchone() is not None


def ensure_managed_table(conn):
    """Create the ownership table when missing (DDL: outside the sync transaction)."""
    if not managed_table_exists(conn):
        with conn.cursor() as cur:
            cur.execute(MANAGED_DDL)
        conn.commit()


INT_COLS = frozenset(("maxquota", "active", "quota", "aliases", "mailboxes", "backupmx"))
_PACK_SEP = "\x1f"  # one string per row: PyMySQL's per-column cost is most of a big read


def _select_parts(t, with_managed):
    cols = MANAGED_COLS[t] + INSERT_COLS[t]
    exprs = [f"IFNULL(t.`{c}`, {0 if c in INT_COLS else repr('')})" for c in cols]
    join = ""
    if with_managed:
        exprs += ["IFNULL(m.domain, '')", "IFNULL(m.deactivated, '')", "IFNULL(m.purge_after_days, '')",
                  "m.tbl IS NOT NULL"]
        join = f" LEFT JOIN `{MANAGED_TABLE}` m ON m.tbl = %s AND m.item = t.`{KEY[t]}`"
    return cols, exprs, join


def _datetime(value):
    if not value:
        return None
    if isinstance(value, datetime.datetime):
        return value
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:  # 0000-00-00 00:00:00 and the like
        return None


def read_state(conn, with_managed=True):
    """``(current, managed)`` in compute_diff()'s shapes, with two SELECTs per table: the
    rows joined with their ownership record (each row's values packed into one string),
    and ownership records whose row is gone. Rows whose values contain the separator are
    read again column by column."""
    current, managed = {}, {}
    with conn.cursor() as cur:
        counts = {}
        if with_managed:
            cur.execute(f"SELECT tbl, COUNT(*) FROM `{MANAGED_TABLE}` GROUP BY tbl")
            counts = dict(cur.fetchall())
        for t in TABLES:
            cols, exprs, join = _select_parts(t, with_managed)
            nm, nc = len(MANAGED_COLS[t]), len(cols)
            nparts = len(exprs)
            ints = [i for i, c in enumerate(cols) if c in INT_COLS]
            cur.execute(f"SELECT t.`{KEY[t]}`, CONCAT_WS(%s, {', '.join(exprs)}) FROM `{t}` t{join}",
                        (_PACK_SEP, t) if with_managed else (_PACK_SEP,))
            rows, odd, joined = {}, [], 0
            for key, packed in cur.fetchall():
                parts = packed.split(_PACK_SEP)
                if len(parts) != nparts:
                    odd.append(key)
                    continue
                for i in ints:
                    parts[i] = int(parts[i])
                key = key.lower()
                rows[key] = (tuple(parts[:nm]), tuple(parts[nm:nc]))
                if with_managed and parts[-1] == "1":
                    joined += 1
                    days = parts[nc + 2]
                    managed[(t, key)] = (parts[nc].lower(), _datetime(parts[nc + 1]), int(days) if days else None)
            for i in range(0, len(odd), 1000):
                chunk = odd[i:i + 1000]
                sel = ", ".join(f"t.`{c}`" for c in cols)
                extra = ", m.domain, m.deactivated, m.purge_after_days, m.tbl IS NOT NULL" if with_managed else ""
                cur.execute(
                    f"SELECT t.`{KEY[t]}`, {sel}{extra} FROM `{t}` t{join} "
                    f"WHERE t.`{KEY[t]}` IN ({', '.join(['%s'] * len(chunk))})",
                    ((t,) if with_managed else ()) + tuple(chunk),
                )
                for row in cur.fetchall():
                    key = row[0].lower()
                    rows[key] = (tuple(row[1:1 + nm]), tuple(row[1 + nm:1 + nc]))
                    if with_managed and row[-1]:
                        joined += 1
                        managed[(t, key)] = ((row[1 + nc] or "").lower(), _datetime(row[2 + nc]), row[3 + nc])
            if with_managed and counts.get(t, 0) > joined:  # records whose row is gone
                cur.execute(
                    f"SELECT m.item, m.domain, m.deactivated, m.purge_after_days FROM `{MANAGED_TABLE}` m "
                    f"LEFT JOIN `{t}` t ON t.`{KEY[t]}` = m.item WHERE m.tbl = %s AND t.`{KEY[t]}` IS NULL",
                    (t,),
                )
                for item, dom, deact, days in cur.fetchall():
                    managed[(t, item.lower())] = (dom.lower(), deact, days)
            current[t] = rows
    return current, managed


# ------------------------------------------------------------------ partition digests

# A no-op sync must not pull 300,000 rows through PyMySQL (pure Python, ~10 us a row).
# Rows are grouped into partitions by the domain part of their key (a domain's own row, its
# mailboxes, aliases and catch-all; an alias domain on its own), ownership records by the
# domain part of their item. MariaDB digests every partition: per table, the row count and
# the MD5 of the compared columns (key + MANAGED_COLS, ownership records likewise), rows
# joined in byte order of their keys. The pillar's rows get the same digest in Python.
# Only partitions whose digests differ are read and diffed. Equal digests mean equal rows:
# every compared column is NOT NULL in PostfixAdmin's schema and the pillar's values never
# hold the separators (control characters are refused by validation), so with equal row
# counts an equal string can only come from equal fields. A partition's GROUP_CONCAT
# beyond max_allowed_packet is truncated: its digest never matches and it is always read.

_DIGEST_TAG = {"domain": "a", "mailbox": "b", "alias": "c", "alias_domain": "d", MANAGED_TABLE: "m"}
_DIGEST_MAX_LEN = 1 << 30  # group_concat_max_len asked for; the server caps it at max_allowed_packet


def partition_of(key):
    """The partition of a (lower-case) key: its domain part; a domain is its own."""
    return key.rpartition("@")[2]


def _part_sql(col):
    return f"LOWER(SUBSTRING_INDEX({col}, '@', -1))"


def _digest_sql(with_managed=True):
    selects = []
    for t in TABLES:
        k = f"t.`{KEY[t]}`"
        cols = ", ".join(f"t.`{c}`" for c in (KEY[t],) + MANAGED_COLS[t])
        selects.append(
            f"SELECT {_part_sql(k)} p, '{_DIGEST_TAG[t]}' k, COUNT(*) n, MD5(GROUP_CONCAT(CONCAT_WS(CHAR(31), {cols}) "
            f"ORDER BY CAST({k} AS BINARY) SEPARATOR '\\n')) h FROM `{t}` t GROUP BY p")
    if with_managed:
        selects.append(
            f"SELECT {_part_sql('m.item')} p, '{_DIGEST_TAG[MANAGED_TABLE]}' k, COUNT(*) n, MD5(GROUP_CONCAT(CONCAT_WS("
            "CHAR(31), m.tbl, m.item, m.domain, IFNULL(m.deactivated, ''), IFNULL(m.purge_after_days, '')) "
            f"ORDER BY m.tbl, CAST(m.item AS BINARY) SEPARATOR '\\n')) h FROM `{MANAGED_TABLE}` m GROUP BY p")
    return (f"SELECT p, GROUP_CONCAT(k, ':', n, ':', h ORDER BY k SEPARATOR ' ') FROM ("
            + " UNION ALL ".join(selects) + ") x GROUP BY p")


def read_digests(conn, with_managed=True):
    """``{partition: digest}`` of what the database holds (see desired_digests)."""
    with conn.cursor() as cur:
        cur.execute("SET SESSION group_concat_max_len = %s", (_DIGEST_MAX_LEN,))
        cur.execute(_digest_sql(with_managed))
        return dict(cur.fetchall())


def desired_digests(desired, retention=None):
    """``{partition: digest}`` of the rows ``desired`` declares, with the ownership records
    a sync leaves behind for them: exactly what read_digests() returns for a database
    already in that state."""
    return _desired_digests(desired, retention)[0]


def _desired_digests(desired, retention=None):
    """desired_digests(), and ``{partition: {table: [keys]}}`` (keys sorted)."""
    from hashlib import md5

    retention = retention or {}
    keys = {}  # partition -> {table: [keys]}
    digests = {}  # partition -> [per-table digests]
    records = {}  # partition -> {table: ownership record strings, joined}
    for t in TABLES:
        tag = _DIGEST_TAG[t]
        fmt = "\x1f".join(["{}"] * (1 + len(MANAGED_COLS[t]))).format
        dom_index = {"domain": None, "alias_domain": 0}.get(t, -2)
        runs = {}  # partition -> ([row strings], [keys], owning domains: None when all are the partition)
        last_p = run = None
        p_lower = True
        for key, (m, _) in desired[t].items():
            p = key.rpartition("@")[2]
            if p != last_p:  # desired rows come domain by domain: few lookups
                last_p, run, p_lower = p, runs.get(p), p == p.lower()
                if run is None:
                    run = runs[p] = ([], [], None)
            run[0].append(fmt(key, *m))
            run[1].append(key)
            # the owning domain, as _row_domain() has it
            if dom_index is None:
                own = key
            else:
                own = m[dom_index]
                if own != p or not p_lower:
                    own = (own or "").lower()
            if own != p or run[2] is not None:
                if run[2] is None:  # not the common shape: the owning domain of every row
                    run = runs[p] = (run[0], run[1], [p] * (len(run[1]) - 1))
                run[2].append(own)
        for p, (rows, ks, doms) in runs.items():
            rows.sort()  # keys are unique and end at \x1f: by key, as ORDER BY the key's bytes
            digests.setdefault(p, []).append(
                f"{tag}:{len(rows)}:{md5(chr(10).join(rows).encode('utf-8')).hexdigest()}")
            if doms is None:  # every row owned by domain p: one join
                ks.sort()
                days = retention.get(p)  # p is the owning domain of every row
                pre, suf = f"{t}\x1f", f"\x1f{p}\x1f\x1f{'' if days is None else days}"
                recs = pre + (suf + "\n" + pre).join(ks) + suf
            else:
                pairs = sorted(zip(ks, doms))
                ks = [k for k, _ in pairs]
                recs = "\n".join(f"{t}\x1f{k}\x1f{dom}\x1f\x1f{'' if retention.get(dom) is None else retention[dom]}"
                                  for k, dom in pairs)
            keys.setdefault(p, {})[t] = ks
            records.setdefault(p, {})[t] = recs
    mtag = _DIGEST_TAG[MANAGED_TABLE]
    out = {}
    for p, recs in records.items():
        n = sum(len(ks) for ks in keys[p].values())
        joined = "\n".join(recs[t] for t in sorted(recs))  # ORDER BY tbl, item
        out[p] = " ".join(digests[p]) + f" {mtag}:{n}:{md5(joined.encode('utf-8')).hexdigest()}"
    return out, keys


def dirty_partitions(want, have, exclusive=False):
    """Partitions to read and diff: digests that differ, and partitions only the database
    has that hold ownership records (or any rows, when ``exclusive``)."""
    dirty = {p for p, d in want.items() if have.get(p) != d}
    mtag = _DIGEST_TAG[MANAGED_TABLE] + ":"
    for p, d in have.items():
        if p not in want and (exclusive or any(x.startswith(mtag) for x in d.split(" "))):
            dirty.add(p)
    return dirty


def digest_counts(digest):
    """``{tag: rows}`` of one partition's digest."""
    out = {}
    for part in digest.split(" "):
        tag, n, _ = part.split(":")
        out[tag] = int(n)
    return out


def read_partitions(conn, parts, counts=None, keys=None):
    """read_state() for the rows and ownership records of the partitions ``parts`` only.

    With ``counts`` (``{partition: {tag: rows}}``, from the database's digests) rows are
    looked up through indexes: mailbox and alias rows by their domain column, domains and
    alias domains by key, ownership records by the keys read and the keys in ``keys``
    (``{partition: {table: [keys]}}``, the pillar's). A table whose rows found that way
    do not add up to the digest's counts (a row filed under another domain, a record of
    a row gone) is read again by scanning for the partition."""
    current = {t: {} for t in TABLES}
    managed = {}
    parts = sorted(parts)
    if not parts:
        return current, managed
    wanted = set(parts)
    counts = counts or {}
    keys = keys or {}
    marks = ", ".join(["%s"] * len(parts))
    with conn.cursor() as cur:
        for t in TABLES:
            cols, exprs, _ = _select_parts(t, False)
            nm = len(MANAGED_COLS[t])
            key = f"t.`{KEY[t]}`"
            select = f"SELECT {key}, {', '.join(exprs)} FROM `{t}` t WHERE "
            tag = _DIGEST_TAG[t]
            found = None
            if counts:
                by = "t.`domain`" if t in ("mailbox", "alias") else key
                cur.execute(select + f"{by} IN ({marks})", parts)
                found, seen = {}, {}
                for row in cur.fetchall():
                    k = row[0].lower()
                    p = k.rpartition("@")[2]
                    if p in wanted:
                        found[k] = (tuple(row[1:1 + nm]), tuple(row[1 + nm:]))
                        seen[p] = seen.get(p, 0) + 1
                if any(seen.get(p, 0) != counts.get(p, {}).get(tag, 0) for p in parts):
                    found = None
            if found is None:
                cur.execute(select + f"{_part_sql(key)} IN ({marks})", parts)
                found = {row[0].lower(): (tuple(row[1:1 + nm]), tuple(row[1 + nm:])) for row in cur.fetchall()}
            current[t] = found
        mtag = _DIGEST_TAG[MANAGED_TABLE]
        cols = "tbl, item, domain, deactivated, purge_after_days"
        found = None
        if counts:
            pairs = set()
            for t in TABLES:
                pairs.update((t, k) for k in current[t])
                for p in parts:
                    pairs.update((t, k) for k in keys.get(p, {}).get(t, ()))
            pairs = sorted(pairs)
            found, seen = {}, {}
            for i in range(0, len(pairs), 1000):
                chunk = pairs[i:i + 1000]
                cur.execute(f"SELECT {cols} FROM `{MANAGED_TABLE}` WHERE (tbl, item) IN "
                            f"({', '.join(['(%s, %s)'] * len(chunk))})", [x for pair in chunk for x in pair])
                for tbl, item, dom, deact, days in cur.fetchall():
                    k = item.lower()
                    p = k.rpartition("@")[2]
                    if p in wanted and (tbl, k) not in found:
                        found[(tbl, k)] = ((dom or "").lower(), _datetime(deact), days)
                        seen[p] = seen.get(p, 0) + 1
            if any(seen.get(p, 0) != counts.get(p, {}).get(mtag, 0) for p in parts):
                found = None
        if found is None:
            cur.execute(f"SELECT {cols} FROM `{MANAGED_TABLE}` m WHERE {_part_sql('m.item')} IN ({marks})", parts)
            found = {(tbl, item.lower()): ((dom or "").lower(), _datetime(deact), days)
                     for tbl, item, dom, deact, days in cur.fetchall()}
        managed.update(found)
    return current, managed

def _upsert_sql(t):
    cols = (KEY[t],) + MANAGED_COLS[t] + INSERT_COLS[t] + ("created", "modified")
    updates = ", ".join(f"`{c}`=VALUES(`{c}`)" for c in MANAGED_COLS[t] + ("modified",))
    return (
        f"INSERT INTO `{t}` ({', '.join(f'`{c}`' for c in cols)}) "
        f"VALUES ({', '.join(['%s'] * len(cols))}) ON DUPLICATE KEY UPDATE {updates}"
    )


_MANAGED_UPSERT = (
    f"INSERT INTO `{MANAGED_TABLE}` (tbl, item, domain, deactivated, purge_after_days, since) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
    "domain=VALUES(domain), deactivated=VALUES(deactivated), purge_after_days=VALUES(purge_after_days)"
)


def _archive(vmail_dir, src_rel, dst_rel):
    """Move one maildir into the archive. Returns a note, or raises OSError."""
    src = os.path.join(vmail_dir, src_rel)
    if not os.path.lexists(src):
        return f"{src_rel}: no maildir to archive"
    dst = os.path.join(vmail_dir, dst_rel)
    base, n = dst, 1
    while os.path.lexists(dst):
        dst, n = f"{base}.{n}", n + 1
    os.makedirs(os.path.dirname(dst), mode=0o750, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError:
        shutil.move(src, dst)
    return None


def apply_diff(conn, diff, vmail_dir=DEFAULT_VMAIL, batch_size=1000, batch_callback=None, moved=None):
    """Write ``diff`` inside the connection's open transaction, in batches, then COMMIT.

    Order: upserts, deactivations, ownership records, maildir archives, purges, commit.
    ``batch_callback(conn, table, operation, rows)`` runs after every batch (tests use it
    to kill the connection mid-sync). Any database error propagates; the caller rolls
    back. Maildir moves cannot be rolled back: they happen last before the purges (the
    rows are inactive anyway) and are appended to ``moved``. Returns notes."""
    moved = [] if moved is None else moved
    now = diff.now
    notes = []

    def in_list(n):
        return ", ".join(["%s"] * n)

    def batches(rows):
        for i in range(0, len(rows), batch_size):
            yield rows[i:i + batch_size]

    def done(table, op, n):
        if batch_callback is not None:
            batch_callback(conn, table, op, n)

    with conn.cursor() as cur:
        for t in TABLES:
            rows = [(k,) + tuple(m) + tuple(ins) + (now, now) for k, m, ins in diff.insert[t]]
            rows += [(k,) + tuple(m) + tuple(ins) + (now, now) for k, m, ins, _ in diff.update[t]]
            sql = _upsert_sql(t)
            for chunk in batches(rows):
                cur.executemany(sql, chunk)
                done(t, "upsert", len(chunk))
        for t in TABLES:
            for chunk in batches(diff.deactivate[t]):
                cur.execute(f"UPDATE `{t}` SET active=0, modified=%s WHERE `{KEY[t]}` IN ({in_list(len(chunk))})", [now] + chunk)
                done(t, "deactivate", len(chunk))
        managed_rows = [u + (now,) for u in diff.managed_upsert]  # since: kept when the record exists
        for chunk in batches(managed_rows):
            cur.executemany(_MANAGED_UPSERT, chunk)
            done(MANAGED_TABLE, "upsert", len(chunk))

        failed = set()
        for user, src, dst in diff.archive:
            try:
                note = _archive(vmail_dir, src, dst)
            except OSError as exc:
                failed.add(user)
                notes.append(f"mailbox {user}: archiving {src} failed ({exc}); not purged")
            else:
                if note:
                    notes.append(note)
                else:
                    moved.append(f"{src} -> {dst}")
        for t in TABLES:
            keys = [k for k in diff.purge[t] if not (t == "mailbox" and k in failed)]
            for chunk in batches(keys):
                cur.execute(f"DELETE FROM `{t}` WHERE `{KEY[t]}` IN ({in_list(len(chunk))})", chunk)
                done(t, "purge", len(chunk))
        by_table = {}
        for t, k in diff.managed_delete:
            if not (t == "mailbox" and k in failed):
                by_table.setdefault(t, []).append(k)
        for t, keys in by_table.items():
            for chunk in batches(keys):
                cur.execute(f"DELETE FROM `{MANAGED_TABLE}` WHERE tbl=%s AND item IN ({in_list(len(chunk))})", [t] + chunk)
                done(MANAGED_TABLE, "delete", len(chunk))
    conn.commit()
    return notes


def run_sync(cfg, test=False, host=None, vmail_dir=DEFAULT_VMAIL, batch_size=1000,
             batch_callback=None, full=False, limit=SUMMARY_LIMIT, lock_timeout=60, socket=None):
    """Validate, diff and (unless ``test``) apply: the whole sync, without Salt.

    Returns a dict: result (True/False), test, changed (bool), changes (summary),
    counts, comment, errors (all of them), warnings (the first ``limit``, all with
    ``full``), warning_count, seconds, timings (per stage), partitions (how many
    partitions there are and how many were read and diffed because their digests differed;
    None when everything was read)."""
    # Hundreds of thousands of small tuples and dicts, none of them cyclic: the cyclic
    # collector would rescan the growing heap again and again (superlinear time).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _run_sync(cfg, test, host, vmail_dir, batch_size, batch_callback, full, limit, lock_timeout, socket)
    finally:
        if gc_was_enabled:
            gc.enable()


class _Prefetch(threading.Thread):
    """The database side of a sync, started before validation so MariaDB digests its
    partitions while Python validates the pillar (two cores at work): connect, take the
    sync lock (unless ``test``), open the transaction, read NOW() and the digests. Only
    reads: nothing is written before the pillar is known to be valid."""

    def __init__(self, db, test, lock_timeout):
        super().__init__(name="mailfleet_vusers-prefetch", daemon=True)
        self.db, self.test, self.lock_timeout = db, test, lock_timeout
        self.conn = None
        self.has_managed = False
        self.now = None
        self.digests = None
        self.error = None
        self._mutex = threading.Lock()
        self._done = self._abandoned = False
        self.checked = threading.Event()  # has_managed is known (or the thread failed)

    def run(self):
        try:
            self._run()
        except Exception as exc:  # pylint: disable=broad-except
            self.error = exc  # raised again in the caller's thread
        self.checked.set()
        with self._mutex:
            self._done = True
            abandoned = self._abandoned
        if abandoned:
            self.close()

    def abandon(self):
        """The caller no longer waits (invalid pillar): close the connection now, or when
        the thread is done (it may be waiting for the lock)."""
        with self._mutex:
            self._abandoned = True
            done = self._done
        if done:
            self.close()

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # pylint: disable=broad-except
                pass

    def _run(self):
        self.conn = connect(self.db)
        if not self.test:
            with self.conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK(%s, %s)", (LOCK_NAME, self.lock_timeout))
                if cur.fetchone()[0] != 1:
                    raise SyncError(f"another sync holds the lock {LOCK_NAME!r}")
        self.has_managed = managed_table_exists(self.conn)
        self.checked.set()
        if self.has_managed:
            self.conn.begin()
            with self.conn.cursor() as cur:
                cur.execute("SELECT NOW()")
                self.now = cur.fetchone()[0]
            self.digests = read_digests(self.conn)

    def result(self):
        self.join()
        if self.error is not None:
            raise self.error
        return self


# Above this share of dirty partitions, one full read is cheaper than a filtered one.
FULL_READ_SHARE = 0.5


def _run_sync(cfg, test, host, vmail_dir, batch_size, batch_callback, full, limit, lock_timeout, socket):
    t0 = time.monotonic()
    ret = {"result": False, "test": bool(test), "changed": False, "changes": {}, "counts": {},
           "comment": "", "errors": [], "warnings": [], "warning_count": 0, "seconds": 0.0, "timings": {},
           "partitions": None}
    timings = ret["timings"]

    def lap(stage, since=[t0]):  # pylint: disable=dangerous-default-value
        now_ = time.monotonic()
        timings[stage] = round(now_ - since[0], 3)
        since[0] = now_

    import pymysql

    db, db_errors = db_settings(cfg.get("db") if isinstance(cfg, dict) else None, socket)
    prefetch = None
    if not db_errors:
        prefetch = _Prefetch(db, test, lock_timeout)
        prefetch.start()
    conn = None
    moved = []
    try:
        model, errors, warnings = validate_pillar(cfg)
        lap("validate")
        errors += db_errors
        ret["warning_count"] = len(warnings)
        ret["warnings"] = warnings if full else warnings[:limit]
        if errors:
            ret["errors"] = errors
            ret["comment"] = _comment(ret, f"pillar invalid, nothing written ({len(errors)} error{'s' if len(errors) != 1 else ''}):", errors)
            ret["seconds"] = round(time.monotonic() - t0, 3)
            if prefetch is not None:
                prefetch.abandon()
                prefetch = None
            return ret
        desired, retention = desired_rows(model, host)
        exclusive = model["exclusive"]
        del model  # the rows are all that is needed from here on (memory: 100,000 mailboxes)
        lap("desired")
        want = None
        prefetch.checked.wait()
        if prefetch.has_managed:  # digests of the pillar's rows, while MariaDB digests its own
            want, part_keys = _desired_digests(desired, retention)
            lap("digest")

        try:
            prefetch.result()
        finally:
            conn = prefetch.conn
        has_managed, now = prefetch.has_managed, prefetch.now
        if not has_managed:
            if not test:
                ensure_managed_table(conn)
            conn.begin()
            with conn.cursor() as cur:
                cur.execute("SELECT NOW()")
                now = cur.fetchone()[0]
        lap("connect")
        partial = None
        if want is not None and prefetch.digests is not None:
            dirty = dirty_partitions(want, prefetch.digests, exclusive=exclusive)
            ret["partitions"] = {"total": len(set(want) | set(prefetch.digests)), "read": len(dirty)}
            if len(dirty) <= FULL_READ_SHARE * max(len(want), 1):
                partial = dirty
        if partial is not None:
            have = prefetch.digests
            counts = {p: digest_counts(have[p]) if p in have else {} for p in partial}
            current, managed = read_partitions(conn, partial, counts=counts, keys=part_keys)
            keep = set(partial)
            for t in TABLES:
                keep.update(partition_of(k) for k in current[t])
            keep.update(partition_of(k) for _, k in managed)
            part_desired = {t: {} for t in TABLES}
            for p in keep:
                for t, ks in part_keys.get(p, {}).items():
                    rows, sub = desired[t], part_desired[t]
                    for k in ks:
                        sub[k] = rows[k]
            lap("read")
            diff = compute_diff(part_desired, current, managed, now, exclusive=exclusive, retention=retention)
            if diff.purge["domain"]:
                # whether a domain may go depends on every row that stays: read them all
                partial = None
        if partial is None:
            current, managed = read_state(conn, has_managed or not test)
            lap("read")
            diff = compute_diff(desired, current, managed, now, exclusive=exclusive, retention=retention)
        lap("diff")
        notes = []
        if test or diff.empty:
            conn.rollback()
        else:
            notes = apply_diff(conn, diff, vmail_dir=vmail_dir, batch_size=batch_size, batch_callback=batch_callback,
                               moved=moved)
            lap("write")
    except (pymysql.Error, SyncError, OSError) as exc:
        if conn is not None:
            try:
                conn.rollback()
            except Exception:  # pylint: disable=broad-except
                pass  # connection gone: the server rolls the transaction back itself
        ret["errors"] = [f"database: {exc}"]
        if moved:  # inactive mailboxes' maildirs, archived before the failure: say so
            ret["errors"] += [f"maildir already archived (its row stays, inactive): {m}" for m in moved]
        head = ("sync failed, transaction rolled back, nothing changed in the database:" if conn is not None
                else "cannot connect to the database, nothing written:")
        ret["comment"] = _comment(ret, head, ret["errors"])
        ret["seconds"] = round(time.monotonic() - t0, 3)
        return ret
    finally:
        if prefetch is not None:
            prefetch.join()
            prefetch.close()

    ret["result"] = True
    ret["changed"] = not diff.empty
    ret["changes"] = summarize(diff, limit=limit, full=full)
    if notes:
        ret["changes"].setdefault("notes", []).extend(notes if full else notes[:limit])
    ret["counts"] = diff.counts()
    what = describe(diff)
    if test:
        head = f"test mode, nothing written; would apply: {what}" if not diff.empty else "no changes"
    else:
        head = f"applied in one transaction: {what}" if not diff.empty else "no changes"
    ret["seconds"] = round(time.monotonic() - t0, 3)
    stages = ", ".join(f"{stage} {secs} s" for stage, secs in timings.items())
    if ret["partitions"]:
        stages += f"; {ret['partitions']['read']} of {ret['partitions']['total']} domain partitions read"
    ret["comment"] = _comment(ret, f"{head} ({ret['seconds']} s)", [f"stages: {stages}"])
    return ret


def _comment(ret, head, lines):
    out = [head] + [f"  {line}" for line in lines]
    if ret["warning_count"]:
        shown = ret["warnings"]
        more = ret["warning_count"] - len(shown)
        out.append(f"{ret['warning_count']} warning{'s' if ret['warning_count'] != 1 else ''}:")
        out += [f"  {w}" for w in shown]
        if more > 0:
            out.append(f"  ... and {more} more")
    return "\n".join(out)


# ------------------------------------------------------------------------ Salt glue

# Only these are Salt functions; the helpers above stay plain Python (the loader honours
# __load__).
__load__ = ("validate", "diff", "sync")

# MariaDB's socket where the pillar names none (salt/mail/parameters: lookup.mysql_socket)
_OS_SOCKET = {"FreeBSD": "/var/run/mysql/mysql.sock"}


def _pillar_cfg(mailfleet):
    if mailfleet is not None:
        return mailfleet
    # 3008 masks values returned by pillar.get inside execution modules: read __pillar__.
    return __pillar__.get("mailfleet")  # pylint: disable=undefined-variable


def _host(host_filter):
    return __opts__.get("id") if host_filter else None  # pylint: disable=undefined-variable


def _socket(socket):
    if socket:
        return socket
    return _OS_SOCKET.get(__grains__.get("os_family"), DEFAULT_SOCKET)  # pylint: disable=undefined-variable


def validate(mailfleet=None):
    """
    Validate the ``mailfleet`` pillar (or the ``mailfleet`` mapping given) without
    touching the database. Returns ``{'result', 'errors', 'warnings'}``; every message
    names its pillar path.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.validate
    """
    cfg = _pillar_cfg(mailfleet)
    _, errors, warnings = validate_pillar(cfg)
    errors += validate_db(cfg.get("db") if isinstance(cfg, dict) else None)
    return {"result": not errors, "errors": errors, "warnings": warnings}


def diff(full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, socket=None, mailfleet=None):
    """
    Show what a sync would change, writing nothing: counts plus the first 10 items per
    table and kind (``full=True``: every item).

    full
        list every item instead of the first 10
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base, for the archive paths of purged mailboxes (default /var/vmail)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: the OS's)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt 'mail01.lab.test' mailfleet_vusers.diff
        salt 'mail01.lab.test' mailfleet_vusers.diff full=True
    """
    return sync(test=True, full=full, host_filter=host_filter, vmail_dir=vmail_dir, socket=socket,
                mailfleet=mailfleet)


def sync(test=None, full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, batch_size=1000, socket=None,
         mailfleet=None, batch_callback=None):
    """
    Bring the PostfixAdmin tables in line with the ``mailfleet`` pillar: validate
    everything first (any error: nothing is written, every error is listed with its
    pillar path), then inserts, updates, deactivations and retention purges in ONE
    transaction, in batches. ``test=True`` (or the minion running in test mode): the
    exact diff, nothing written.

    Returns ``result``, ``changed``, ``changes`` (per table and kind: count and first 10
    items), ``counts``, ``comment``, ``errors``, ``warnings`` (first 10),
    ``warning_count``, ``seconds`` and ``timings``.

    test
        only compute the diff (default: the minion's ``test`` option)
    full
        list every changed item instead of the first 10 per kind
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base; purged mailboxes are moved to ``<vmail_dir>/.archive/`` (default
        /var/vmail)
    batch_size
        rows per executemany batch (default 1000)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: the OS's)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.sync
        salt '*mail*' mailfleet_vusers.sync test=True
    """
    if test is None:
        test = bool(__opts__.get("test", False))  # pylint: disable=undefined-variable
    ret = run_sync(_pillar_cfg(mailfleet), test=test, host=_host(host_filter), vmail_dir=vmail_dir,
                   batch_size=int(batch_size), batch_callback=batch_callback, full=full, socket=_socket(socket))
    if not ret["result"]:
        __context__["retcode"] = 1  # pylint: disable=undefined-variable
    return ret
