"""
Compromised accounts, the pure side (the mailfleet_accounts runner's): the check of a
report's outbound and queue parts (bounded, every user a valid SASL name), the rule that a
host reports only its own domains' users, the cap on holds one reporter may start, and the
actions for the reported users given the holds in force. No Salt: imported plainly (Salt
puts the utils directories on ``sys.path``).
"""
import mailfleet_sasl_hold_plan  # the hosts' bound on a hold map
from mailfleet_sasl_user import valid_user as _valid_user  # the hosts check the same way

__virtualname__ = "mailfleet_account_policy"


def __virtual__():
    return __virtualname__


MAX_USERS = 100  # per report (the engine sends at most 100)


def _count(v):
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10 ** 9 else 0


def check_outbound(payload):
    """([(user, {"messages", "recipients", "window", "ips"})], refusals) from a report."""
    entries = payload.get("outbound") or []
    if not isinstance(entries, list):
        return [], [("outbound", "not a list")]
    if len(entries) > MAX_USERS:
        return [], [("outbound", f"{len(entries)} users in one report (max {MAX_USERS})")]
    out, refused, seen = [], [], set()
    for e in entries:
        if not isinstance(e, dict):
            refused.append((repr(e)[:80], "entry is not a mapping"))
            continue
        try:
            user = _valid_user(e.get("user"))
        except ValueError as exc:
            refused.append((repr(e.get("user"))[:80], str(exc)))
            continue
        if user in seen:
            continue
        seen.add(user)
        ips = [str(i)[:64] for i in (e.get("ips") or [])[:5]] if isinstance(e.get("ips"), list) else []
        out.append((user, {"messages": _count(e.get("messages")), "recipients": _count(e.get("recipients")),
                           "window": _count(e.get("window")), "ips": ips}))
    return out, refused


def served_only(users, domains):
    """(users of ``domains``, refusals): a host reports only its own domains' users.
    ``domains``: what the master's data says the reporter serves (None: unknown, nobody)."""
    domains = {str(d).lower().rstrip(".") for d in domains or ()}
    kept, refused = [], []
    for user, info in users:
        if user.rpartition("@")[2] in domains:
            kept.append((user, info))
        else:
            refused.append((user, "the reporter does not serve this user's domain"))
    return kept, refused


def fleet_limit():
    """Holds in force the whole fleet may carry: what every host's hold map takes (the hosts
    refuse a longer map whole, so the master must never send one)."""
    return mailfleet_sasl_hold_plan.MAX_USERS


def cap_new_holds(actions, started, cap, in_force=0):
    """(actions, refusals): at most ``cap`` holds in force started by one reporter
    (``started``: how many it has now) and at most ``fleet_limit()`` in force in all
    (``in_force``: how many there are now); escalations of users already held always pass."""
    kept, refused, n, total, limit = [], [], started, in_force, fleet_limit()
    for action in actions:
        if action[1] == "hold":
            if n >= cap:
                refused.append((action[0], f"the reporter already started {n} holds in force (max {cap})"))
                continue
            if total >= limit:
                refused.append((action[0], f"the fleet already has {total} holds in force (max {limit})"))
                continue
            n += 1
            total += 1
        kept.append(action)
    return kept, refused


def decide(users, current):
    """Actions for reported users given the holds in force ({user: mode}).

    [(user, new mode, info)]: "hold" for a user not held, "refuse" for one held that is
    reported again (it kept sending), nothing for one already refused."""
    actions = []
    for user, info in users:
        mode = current.get(user)
        if mode is None:
            actions.append((user, "hold", info))
        elif mode == "hold":
            actions.append((user, "refuse", info))
    return actions


def check_queue(payload):
    """The report's queue part, validated, or None."""
    q = payload.get("queue")
    if q is None:
        return None
    if not isinstance(q, dict) or q.get("state") not in ("over", "cleared"):
        raise ValueError("queue part is not {state: over|cleared, ...}")
    return {"state": q["state"], "deferred": _count(q.get("deferred")), "oldest": _count(q.get("oldest")),
            "hold": _count(q.get("hold")), "truncated": bool(q.get("truncated")),
            "thresholds": {k: _count((q.get("thresholds") or {}).get(k)) for k in ("deferred", "age")}
            if isinstance(q.get("thresholds"), dict) else {}}
