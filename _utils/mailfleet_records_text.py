"""
DNS names and TXT strings for the record builder (``mailfleet_records``): absolute lower-case
names, TXT values cut into 255-byte strings and quoted for the zone-file form, and back.
Also the record builder's constants and its error. Pure; imported plainly.
"""
import re

__virtualname__ = "mailfleet_records_text"


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
HOSTNAME_RE = re.compile(rf"^({_HOST_LABEL}\.)+[a-z][a-z0-9-]*\.$")
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


def is_name(name):
    return bool(_NAME.match(name)) and len(name) <= 254


def is_under(name, zone):
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


def quote_string(chunk):
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
    return " ".join(quote_string(c) for c in txt_chunks(value))


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


def has_tag_prefix(value, prefix):
    """Case-insensitive tag-value prefix: ``v=spf1`` then a space, ``;`` or the end."""
    if not value.lower().startswith(prefix.lower()):
        return False
    rest = value[len(prefix):]
    return not rest or rest[0] in " ;\t"
