"""
The ban sets' pure side (mailfleet_ban module and state): which addresses may be banned and
in what canonical form, the one nft script that changes both sets in one transaction, the
reading of ``nft -j list set`` output, and what reconciliation must change so the sets hold
the ledger's bans. No Salt, no nft: imported plainly (Salt puts the utils directories on
``sys.path``).
"""
import ipaddress

import mailfleet_address  # salt://_utils: the one address normaliser

__virtualname__ = "mailfleet_ban_sets"

TABLE = "inet mailfleet"
SETS = {4: "banned_v4", 6: "banned_v6"}
MAX_TIMEOUT = 366 * 86400
MAX_BATCH = 100_000


def __virtual__():
    return __virtualname__


def normalise(address):
    """The canonical text of an address we may ban, or raise ValueError."""
    text = mailfleet_address.address(address, ban=True)
    return text, ipaddress.ip_address(text).version


def timeout_seconds(value):
    if isinstance(value, bool):
        raise ValueError(f"bad timeout {value!r}")
    t = int(value)
    if t < 1 or t > MAX_TIMEOUT:
        raise ValueError(f"timeout {t} out of range 1..{MAX_TIMEOUT}")
    return t


def items(addresses, timeout):
    """[(address, family, seconds)] from a list (+ one timeout) or a {address: seconds} map."""
    if isinstance(addresses, str):
        addresses = [a for a in addresses.replace(",", " ").split() if a]
    if isinstance(addresses, dict):
        pairs = list(addresses.items())
    else:
        pairs = [(a, timeout) for a in (addresses or [])]
    if len(pairs) > MAX_BATCH:
        raise ValueError(f"{len(pairs)} addresses in one batch (max {MAX_BATCH})")
    out, bad = {}, []
    for addr, t in pairs:
        try:
            text, fam = normalise(addr)
            out[text] = (fam, timeout_seconds(t) if t is not None else None)
        except (ValueError, TypeError) as exc:
            bad.append(f"{addr!r}: {exc}")
    return out, bad


def element_script(items, op="add"):
    """The nft script for {address: (family, seconds)}: one statement per set."""
    lines = []
    for fam, name in SETS.items():
        if op == "add":
            elems = [f"{a} timeout {t}s" if t else a for a, (f, t) in items.items() if f == fam]
        else:
            elems = [a for a, (f, _t) in items.items() if f == fam]
        if elems:
            for i in range(0, len(elems), 5000):
                lines.append(f"{op} element {TABLE} {name} {{ {', '.join(elems[i:i + 5000])} }}")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_listing(doc):
    """{address: seconds left or None} from ``nft -j list set`` output."""
    out = {}
    for obj in doc.get("nftables", []):
        s = obj.get("set")
        if not s:
            continue
        for el in s.get("elem", []) or []:
            if isinstance(el, str):
                out[el] = None
            elif isinstance(el, dict) and "elem" in el:
                inner = el["elem"]
                out[str(inner.get("val"))] = inner.get("expires")
    return out


def plan(ledger, present, now):
    """What to change so the sets contain the ledger's bans (pure).

    ``ledger``: pillar ``mailfleet_bans`` ({"active": {address: expires epoch}, "revoked":
    [...]}); ``present``: {address: seconds left}. Active bans that are missing, or that
    expire here more than 5 s before the ledger says, are (re)added with their remaining
    time; revoked addresses still present are removed. Elements the ledger does not know
    are left alone (a ban decided after the pillar was rendered must not be undone).
    """
    add_, remove_ = {}, []
    for addr, expires in (ledger.get("active") or {}).items():
        left = int(float(expires) - now)
        if left < 1:
            continue
        have = present.get(addr, -1)
        if have is None:
            continue
        if have < 0 or have + 5 < left:
            add_[addr] = min(left, MAX_TIMEOUT)
    for addr in ledger.get("revoked") or []:
        if addr in present and addr not in (ledger.get("active") or {}):
            remove_.append(addr)
    return add_, sorted(remove_)
