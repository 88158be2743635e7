"""
The value parsers of mailfleet's pillar validator (mailfleet_pillar): quotas with units,
domain names (IDNA to punycode), local parts (ASCII dot-atom, no ``/``), addresses, and
password hashes (a ``{SCHEME}`` Dovecot verifies; plaintext refused). Each raises
ValueError naming what is wrong; valid answers of the hot ones are remembered (a hosting
pillar repeats a handful of quotas 100,000 times). Pure; imported plainly.
"""
import functools
import re

try:
    import idna as _idna
except ImportError:  # pragma: no cover - idna ships with salt's requirements
    _idna = None

__virtualname__ = "mailfleet_pillar_values"


def __virtual__():
    return __virtualname__


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


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# RFC 5322 dot-atom, ASCII only (no SMTPUTF8 local parts); ',' can never appear, so a
# goto list stays unambiguous.
# '/' is left out on purpose: Dovecot's %n would make it a path segment (bob/.Sent@d would
# get bob's Sent folder as its INBOX).
_LOCAL_RE = re.compile(r"[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+)*")


_QUOTA_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([BKMGT]?)\s*", re.IGNORECASE)


_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


MIB = 1024**2


BIGINT_MAX = 2**63 - 1  # mailbox.quota, domain.maxquota: bigint(20)


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
        if "/" in local:
            raise ValueError(f"invalid local part {local!r}: '/' would be a path segment in the maildir")
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
