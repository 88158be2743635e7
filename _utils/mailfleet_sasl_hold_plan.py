"""
Account holds on a mail host, the pure side (mailfleet_sasl_hold module and state): the
holds of pillar ``mailfleet_sasl_holds`` checked, the Postfix map they render to and back,
which queued messages belong to a held or released user (by envelope sender or SASL
login), and when a release must requeue instead of release (a hold older than a day, or
than half the host's shortest queue lifetime, so released mail never bounces). No Salt, no
Postfix: imported plainly (Salt puts the utils directories on ``sys.path``).
"""
import re
import time

from mailfleet_sasl_user import valid_user as _valid_user  # the runner checks the same way

__virtualname__ = "mailfleet_sasl_hold_plan"


def __virtual__():
    return __virtualname__


MODES = ("hold", "refuse")


REFUSE_TEXT = "450 4.7.1 Outbound mail of this account is held by the postmaster (mailfleet)"


MAX_USERS = 10_000


def check_holds(holds):
    """{user: mode} validated; errors name pillar mailfleet_sasl_holds."""
    if holds is None:
        return {}
    if not isinstance(holds, dict):
        raise ValueError("pillar mailfleet_sasl_holds must be a mapping {user: hold|refuse}")
    if len(holds) > MAX_USERS:
        raise ValueError(f"pillar mailfleet_sasl_holds: {len(holds)} users (max {MAX_USERS})")
    out = {}
    for user, mode in holds.items():
        try:
            key = _valid_user(user)
        except ValueError as exc:
            raise ValueError(f"pillar mailfleet_sasl_holds: {exc}") from None
        if mode not in MODES:
            raise ValueError(f"pillar mailfleet_sasl_holds:{user}: mode {mode!r} is not one of {MODES}")
        out[key] = mode
    return out


def render_map(holds):
    """The map's text for {user: mode} (sorted, stable: unchanged holds = unchanged file)."""
    lines = ["# Managed by mailfleet (mailfleet_sasl_hold, from the master's ledger). Local edits are overwritten."]
    for user, mode in sorted(holds.items()):
        lines.append(f"{user}\t{'HOLD' if mode == 'hold' else REFUSE_TEXT}")
    return "\n".join(lines) + "\n"


def parse_map(text):
    """{user: mode} back from a rendered map (for diffs)."""
    out = {}
    for line in (text or "").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _sep, value = line.partition("\t")
        out[key] = "hold" if value.strip() == "HOLD" else "refuse"
    return out


# Released mail held longer than this is requeued (``postsuper -r``: a new queue id and a
# new arrival time) rather than released (``-H``): postsuper(1) advises it for mail held a
# significant fraction of maximal_queue_lifetime, which would otherwise bounce at its first
# deferral. The hold queue itself is outside the lifetimes (qmgr never scans it), so a SASL
# hold needs no raised lifetimes on the host: the requeue is what keeps released mail safe.
REQUEUE_AFTER = 86_400


# postconf(5) time units; a bare number is in the parameter's default unit (days here)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


_TIME_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def postfix_seconds(value, default_unit="d"):
    """A Postfix time value ("5d", "3600s", "2") in seconds; None when it is not one."""
    m = _TIME_RE.match(str(value))
    return int(m.group(1)) * _UNITS[m.group(2) or default_unit] if m else None


def requeue_after(lifetimes):
    """Seconds of hold after which release requeues: a day, or half of the shortest queue
    lifetime of the host (maximal_queue_lifetime, bounce_queue_lifetime) when that is less,
    so a host with short lifetimes cannot bounce released mail either."""
    secs = [s for s in (postfix_seconds(v) for v in lifetimes) if s is not None]
    return min([REQUEUE_AFTER] + [s // 2 for s in secs])


# At most this many queue files are read for their SASL login per sync (postcat each).
MAX_LOGINS = 10_000


_LOGIN_RE = re.compile(r"^named_attribute: sasl_username=(.*)$", re.M)


def login_of(envelope):
    """The SASL login recorded in a queue file's envelope (``postcat -e`` text), lower-case;
    "" when the message was not submitted by an authenticated client."""
    m = _LOGIN_RE.search(envelope or "")
    return m.group(1).strip().lower() if m else ""


def login_candidates(msgs, held, released):
    """Queue ids whose login matters: the hold queue when someone is released, the other
    queues' messages whose sender shares a domain with a held user (an alias of the user,
    most often; reading every queue file of a large deferred queue would take minutes)."""
    domains = {u.rpartition("@")[2] for u in held}
    out = []
    for m in msgs:
        sender = str(m.get("sender", "")).lower()
        if m.get("queue_name") == "hold":
            if released:
                out.append(m["queue_id"])
        elif held and sender.rpartition("@")[2] in domains:
            out.append(m["queue_id"])
    return out[:MAX_LOGINS]


def plan(holds, current_map, msgs, release=(), logins=None, now=None, requeue_after=REQUEUE_AFTER):
    """What sync would do (pure): {"map": changed?, "hold_ids", "release_ids", "requeue_ids",
    "released"}. A message belongs to a user by its envelope sender or by the SASL login that
    submitted it (``logins``: {queue id: login}), so mail sent under an alias is held and
    released with its sender's account."""
    logins = logins or {}
    held_users = set(holds)
    released = {u.lower() for u in release} - held_users
    # users that lost their hold since the map was written are released too (level-triggered)
    released |= set(current_map) - held_users

    def owned(m, users, queues):
        return m.get("queue_name") in queues and (
            str(m.get("sender", "")).lower() in users or logins.get(m["queue_id"], "") in users)
    hold_ids = sorted(m["queue_id"] for m in msgs if held_users and owned(m, held_users, ("incoming", "active", "deferred")))
    out = sorted((m for m in msgs if released and owned(m, released, ("hold",))), key=lambda m: m["queue_id"])
    now = time.time() if now is None else now
    old = [m["queue_id"] for m in out if now - float(m.get("arrival_time") or now) >= requeue_after]
    return {
        "map": current_map != holds,
        "hold_ids": hold_ids,
        "release_ids": [m["queue_id"] for m in out if m["queue_id"] not in old],
        "requeue_ids": old,
        "released": sorted(released),
    }
