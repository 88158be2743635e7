"""
Ban sets on a mail host: add, remove, list and reconcile the elements of the nftables sets
``inet mailfleet banned_v4`` / ``banned_v6`` (declared by salt://mail/files/mailfleet.nft.jinja
with ``flags timeout``).

The master's ``mailfleet_defense`` runner calls ``add`` on every host at once (one
``cmd_async``); everything it receives is validated again here: each address must parse
(``ipaddress``), loopback/unspecified/multicast addresses are refused, timeouts are bounded,
and the whole batch goes to ONE ``nft -f -`` (one netlink transaction: all or nothing, and a
few ms for a thousand elements). Nothing reaches a shell.

``reconciled`` (used by the ``mailfleet_ban.reconciled`` state) makes the sets contain the
ledger's active bans that the master hands out in pillar ``mailfleet_bans``.
"""
import ipaddress
import json
import logging
import subprocess
import time

# salt://_utils (the loader puts the utils directories on sys.path while it loads)
import mailfleet_address

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_ban"

TABLE = "inet mailfleet"
SETS = {4: "banned_v4", 6: "banned_v6"}
MAX_TIMEOUT = 366 * 86400
MAX_BATCH = 100_000
NFT = "nft"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("add", "remove", "listed", "reconcile")


def __virtual__():
    return __virtualname__


def normalise(address):
    """The canonical text of an address we may ban, or raise ValueError."""
    text = mailfleet_address.address(address, ban=True)
    return text, ipaddress.ip_address(text).version


def _timeout(value):
    if isinstance(value, bool):
        raise ValueError(f"bad timeout {value!r}")
    t = int(value)
    if t < 1 or t > MAX_TIMEOUT:
        raise ValueError(f"timeout {t} out of range 1..{MAX_TIMEOUT}")
    return t


def _items(addresses, timeout):
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
            out[text] = (fam, _timeout(t) if t is not None else None)
        except (ValueError, TypeError) as exc:
            bad.append(f"{addr!r}: {exc}")
    return out, bad


def _nft_argv():
    """``nft``, or the argv prefix in minion option ``mailfleet_nft`` (a list; the integration
    test runs nft inside a network namespace with ``[ip, netns, exec, <ns>, nft]``)."""
    argv = (globals().get("__opts__") or {}).get("mailfleet_nft") or [NFT]
    return [str(a) for a in argv]


def _nft(script):
    proc = subprocess.run([*_nft_argv(), "-f", "-"], input=script, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr.strip()


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


def add(addresses, timeout=None):
    """
    Ban ``addresses`` (a list, with ``timeout`` seconds; or a map address -> seconds) in one
    nft transaction. Returns {"added": n, "refused": [...], "ms": t}.

    CLI Example: ``salt '*mail*' mailfleet_ban.add '[198.19.0.5]' 600``
    """
    t0 = time.monotonic()
    items, bad = _items(addresses, timeout)
    if any(t is None for _f, t in items.values()):
        raise ValueError("a timeout is required")
    ret = {"added": 0, "refused": bad}
    if items:
        rc, err = _nft(element_script(items, "add"))
        if rc != 0:
            raise RuntimeError(f"nft add element failed: {err}")
        ret["added"] = len(items)
    ret["ms"] = round((time.monotonic() - t0) * 1000, 1)
    if bad:
        log.warning("mailfleet_ban.add refused %d addresses: %s", len(bad), bad[:5])
    return ret


def remove(addresses):
    """
    Unban: delete the elements that are present (absent ones are not an error).

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_ban.remove '[198.19.0.5]'
    """
    items, bad = _items(addresses, None)
    present = listed()
    items = {a: v for a, v in items.items() if a in present}
    if items:
        rc, err = _nft(element_script(items, "delete"))
        if rc != 0:
            raise RuntimeError(f"nft delete element failed: {err}")
    return {"removed": sorted(items), "refused": bad}


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


def listed():
    """
    {address: seconds left} of both ban sets.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_ban.listed
    """
    out = {}
    for name in SETS.values():
        proc = subprocess.run([*_nft_argv(), "-j", "list", "set", *TABLE.split(), name],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"nft list set {name}: {proc.stderr.strip()}")
        out.update(parse_listing(json.loads(proc.stdout)))
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


def _fresh_ledger():
    """Pillar ``mailfleet_bans`` compiled by the master now (not the minion's cached pillar)."""
    import salt.pillar

    pil = salt.pillar.get_pillar(__opts__, dict(__grains__), __opts__["id"],
                                 saltenv=__opts__.get("saltenv"), pillarenv=__opts__.get("pillarenv"))
    try:
        return pil.compile_pillar().get("mailfleet_bans")
    finally:
        if hasattr(pil, "destroy"):
            pil.destroy()


def reconcile(ledger=None, test=False, fresh=True):
    """
    Make the ban sets contain the ledger's bans in force (pillar ``mailfleet_bans``): add the
    missing ones with their remaining time, delete the revoked ones. ``ledger``: that pillar
    value (the state passes its own); else it is compiled fresh from the master (``fresh``)
    or taken from the minion's pillar. Returns {"added": {address: seconds}, "removed": [...]}.

    CLI Example: ``salt '*mail*' mailfleet_ban.reconcile``
    """
    if ledger is None:
        ledger = _fresh_ledger() if fresh else __pillar__.get("mailfleet_bans")
    if not isinstance(ledger, dict):
        return {"skipped": "no pillar mailfleet_bans (is the mailfleet_bans ext_pillar configured?)",
                "added": {}, "removed": []}
    add_, remove_ = plan(ledger, listed(), time.time())
    if not test:
        if add_:
            # "add" keeps the timeout of an element already there: delete those first.
            present = listed()
            again = [a for a in add_ if a in present]
            if again:
                remove(again)
            add(add_)
        if remove_:
            remove(remove_)
    return {"added": add_, "removed": remove_}
