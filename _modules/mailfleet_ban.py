"""
Ban sets on a mail host: add, remove, list and reconcile the elements of the nftables sets
``inet mailfleet banned_v4`` / ``banned_v6`` (declared by salt://mail/files/mailfleet.nft.jinja
with ``flags timeout``).

The master's ``mailfleet_defense`` runner calls ``add`` on every host at once (one
``cmd_async``); everything it receives is validated again here: each address must parse
(``ipaddress``), loopback/unspecified/multicast addresses are refused, timeouts are bounded,
and the whole batch goes to ONE ``nft -f -`` (one netlink transaction: all or nothing, and a
few ms for a thousand elements). Nothing reaches a shell.

``reconcile`` (used by the ``mailfleet_ban.reconciled`` state) makes the sets contain the
ledger's active bans that the master hands out in pillar ``mailfleet_bans``. The pure side
(which addresses, the nft script, the reconciliation plan) is _utils/mailfleet_ban_sets.py.
"""
import json
import logging
import subprocess
import time

# salt://_utils (the loader puts the utils directories on sys.path while it loads)
from mailfleet_ban_sets import SETS as _SETS
from mailfleet_ban_sets import TABLE as _TABLE
from mailfleet_ban_sets import element_script as _element_script
from mailfleet_ban_sets import items as _items
from mailfleet_ban_sets import parse_listing as _parse_listing
from mailfleet_ban_sets import plan as _plan

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_ban"

NFT = "nft"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("add", "remove", "listed", "reconcile")


def __virtual__():
    return __virtualname__


def _nft_argv():
    """``nft``, or the argv prefix in minion option ``mailfleet_nft`` (a list; the integration
    test runs nft inside a network namespace with ``[ip, netns, exec, <ns>, nft]``)."""
    argv = (globals().get("__opts__") or {}).get("mailfleet_nft") or [NFT]
    return [str(a) for a in argv]


def _nft(script):
    proc = subprocess.run([*_nft_argv(), "-f", "-"], input=script, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr.strip()


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
        rc, err = _nft(_element_script(items, "add"))
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
        rc, err = _nft(_element_script(items, "delete"))
        if rc != 0:
            raise RuntimeError(f"nft delete element failed: {err}")
    return {"removed": sorted(items), "refused": bad}


def listed():
    """
    {address: seconds left} of both ban sets.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_ban.listed
    """
    out = {}
    for name in _SETS.values():
        proc = subprocess.run([*_nft_argv(), "-j", "list", "set", *_TABLE.split(), name],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"nft list set {name}: {proc.stderr.strip()}")
        out.update(_parse_listing(json.loads(proc.stdout)))
    return out


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
    add_, remove_ = _plan(ledger, listed(), time.time())
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
