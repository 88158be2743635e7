"""
State ``mailfleet_sasl_hold.reconciled``: the host's held SASL users follow the master's
ledger (pillar ``mailfleet_sasl_holds`` from the ``mailfleet_bans`` ext_pillar; see
_modules/mailfleet_sasl_hold.py). Honours test=True; idempotent (an unchanged ledger changes
nothing). Without the pillar key (ext_pillar not configured) the map is created empty once,
so that main.cf can name it, and otherwise left alone.
"""

__virtualname__ = "mailfleet_sasl_hold"


def __virtual__():
    return __virtualname__


def reconciled(name, holds=None):
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    seq = None
    if holds is None:
        holds = __pillar__.get("mailfleet_sasl_holds")
        seq = __pillar__.get("mailfleet_sasl_holds_seq")
    if holds is None:
        import os
        if os.path.exists(__salt__["mailfleet_sasl_hold.map_path"]() + ".db"):
            ret["comment"] = "pillar mailfleet_sasl_holds absent (ext_pillar mailfleet_bans?): map left as it is"
            return ret
        holds = {}
    try:
        res = __salt__["mailfleet_sasl_hold.sync"](holds=holds, test=__opts__["test"],
                                                   seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None)
    except (ValueError, RuntimeError, OSError) as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = res["changes"]
    ret["result"] = res["result"]
    ret["comment"] = res["comment"] + (" (queue listing truncated)" if res.get("truncated") else "")
    return ret
