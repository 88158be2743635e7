"""
ext_pillar ``mailfleet_bans``: the ban ledger's bans in force, handed to every minion as
pillar ``mailfleet_bans`` = {"active": {address: expires epoch}, "revoked": [addresses],
"generated": epoch}, for the state ``mailfleet_ban.reconciled``.

Why pillar: it is rendered by the master for each state run (never stale), travels over the
minion's authenticated, encrypted channel, and needs no peer-publish rights (a minion asking
the master's runners itself would need ``peer_run``, which any minion could then use).
The ledger (see _runners/mailfleet_defense.py) is read-only here.

Master config::

    ext_pillar:
      - mailfleet_bans: {}
"""
import os
import sqlite3
import time

__virtualname__ = "mailfleet_bans"


def __virtual__():
    return __virtualname__


def ext_pillar(minion_id, pillar, *args, **kwargs):  # pylint: disable=unused-argument
    path = __opts__.get("mailfleet_ledger") or os.path.join(__opts__["cachedir"], "mailfleet", "ledger.sqlite")  # noqa: F821
    now = time.time()
    out = {"active": {}, "revoked": [], "generated": now}
    if not os.path.exists(path):
        return {"mailfleet_bans": out}
    memory = ((__opts__.get("mailfleet_defense") or {}).get("revoked_memory") or 7 * 86400)  # noqa: F821
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        for addr, exp in db.execute("SELECT address, max(expires) FROM bans WHERE revoked IS NULL"
                                    " AND not_before<=? AND expires>? GROUP BY address", (now, now)):
            out["active"][addr] = exp
        revoked = {r[0] for r in db.execute("SELECT address FROM bans WHERE revoked>=?", (now - memory,))}
        out["revoked"] = sorted(revoked - set(out["active"]))
    finally:
        db.close()
    return {"mailfleet_bans": out}
