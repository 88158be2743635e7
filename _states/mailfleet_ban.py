"""
State ``mailfleet_ban.reconciled``: the host's ban sets contain the ledger's bans in force.

The ledger lives on the master; the ``mailfleet_bans`` ext_pillar hands its active bans (and
recent unbans) to every host as pillar ``mailfleet_bans``, rendered fresh for each state run.
This is the level-triggered half of the ban path: a host that missed the fast path (cut off,
minion down, rebooted with empty sets) catches up at its next state run, on minion start
(reactor/minion_start.sls) and on the minion schedule (salt/mail/defense.sls).
"""

__virtualname__ = "mailfleet_ban"


def __virtual__():
    if "mailfleet_ban.reconcile" in __salt__:
        return __virtualname__
    return (False, "mailfleet_ban execution module not loaded")


def reconciled(name):
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    ledger = __pillar__.get("mailfleet_bans")
    if not isinstance(ledger, dict):
        ret["comment"] = "No pillar mailfleet_bans (ext_pillar mailfleet_bans not configured): nothing to reconcile"
        return ret
    test = bool(__opts__.get("test"))
    try:
        res = __salt__["mailfleet_ban.reconcile"](ledger=ledger, test=test)
    except Exception as exc:  # noqa: BLE001
        ret.update(result=False, comment=f"reconciling the ban sets failed: {exc}")
        return ret
    changes = {k: v for k, v in (("added", res.get("added")), ("removed", res.get("removed"))) if v}
    n = len(ledger.get("active") or {})
    if not changes:
        ret["comment"] = f"Ban sets hold the ledger's {n} active bans"
    elif test:
        ret.update(result=None, comment="Ban sets would be reconciled", changes=changes)
    else:
        ret.update(comment="Ban sets reconciled with the ledger", changes=changes)
    return ret
