"""
Holding the outbound mail of a SASL user (issue 6, compromised accounts), on a mail host.

The master decides (_runners/mailfleet_accounts.py) and records each hold in its ledger; the
``mailfleet_bans`` ext_pillar hands the holds to every host as pillar
``mailfleet_sasl_holds`` = {user: "hold" | "refuse"}. This module makes Postfix follow it:

- the map ``<postfix_dir>/mailfleet_sasl_hold`` (``hash:``, named by ``check_sasl_access``
  first in ``smtpd_recipient_restrictions``, see postfix-main.cf.jinja; submission and
  submissions evaluate it, port 25 never matches as nobody authenticates there):
  ``hold``   -> ``HOLD``: what the user still submits is accepted onto the hold queue
               (deferred, never bounced; a false positive loses nothing and sees no error);
  ``refuse`` -> ``450 4.7.1``: the user kept sending while held: new mail is refused with a
               temporary error (the client keeps it and retries), so the hold queue does
               not fill with spam;
- messages of a held user already in the queue (envelope sender = the user, any queue but
  hold) are put on hold with ``postsuper -h``;
- on release the user's line goes, its held messages are released (``postsuper -H``) and
  sent at once (``postqueue -i``).

Functions: ``sync`` (what the state and the runner call), ``status``; the pure helpers
``render_map``, ``valid_user`` are unit tested.
"""
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time

import mailfleet_files  # salt://_utils: on sys.path for execution modules
import mailfleet_postqueue
from mailfleet_sasl_user import valid_user as _valid_user  # salt://_utils: the runner checks the same way

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_sasl_hold"

MODES = ("hold", "refuse")
REFUSE_TEXT = "450 4.7.1 Outbound mail of this account is held by the postmaster (mailfleet)"
MAX_USERS = 10_000
# Postfix logs at most 100 characters of a SASL name; keys must be one map token.


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("sync", "status", "map_path")


def __virtual__():
    return __virtualname__


# --- pure ----------------------------------------------------------------------------------

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


# --- host ----------------------------------------------------------------------------------

def _postfix_dir():
    """Postfix's config directory; before Postfix is configured (no main.cf: postconf fails)
    the platform's default."""
    default = "/usr/local/etc/postfix" if os.path.isdir("/usr/local/etc/postfix") else "/etc/postfix"
    try:
        out = __salt__["cmd.run_stdout"]("postconf -h config_directory", python_shell=False,
                                         ignore_retcode=True).strip()
    except Exception:  # noqa: BLE001
        return default
    return out if out.startswith("/") and os.path.isdir(out) else default


def _bin(name):
    for d in ("/usr/sbin", "/usr/local/sbin"):
        if os.path.exists(os.path.join(d, name)):
            return os.path.join(d, name)
    return name


def _fresh_holds():
    """(holds, seq): pillar ``mailfleet_sasl_holds`` compiled by the master now: the minion's in-memory
    pillar may predate a release, and a schedule run must not hold a released user again."""
    import salt.pillar
    pil = salt.pillar.get_pillar(__opts__, dict(__grains__), __opts__["id"],
                                 saltenv=__opts__.get("saltenv"), pillarenv=__opts__.get("pillarenv"))
    try:
        data = pil.compile_pillar()
        return data.get("mailfleet_sasl_holds"), data.get("mailfleet_sasl_holds_seq")
    finally:
        destroy = getattr(pil, "destroy", None)
        if destroy:
            destroy()


def map_path(postfix_dir=None):
    """
    The path of the held-users map Postfix reads (under ``postfix_dir``, default the
    host's Postfix configuration directory).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_sasl_hold.map_path
    """
    return os.path.join(postfix_dir or _postfix_dir(), "mailfleet_sasl_hold")


def _write_map(path, text):
    """Write text and its .db so that Postfix never sees one without the other half-made."""
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".mailfleet_sasl_hold.", dir=d)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        argv = [_bin("postmap"), f"hash:{tmp}"]
        if not os.path.exists(os.path.join(d, "main.cf")):
            # a host's first run: main.cf comes later in the run (it names this map only once
            # the map exists), and postmap refuses to start without one; an empty main.cf
            # (Postfix's defaults) is all a hash table needs
            bare = tempfile.mkdtemp(prefix=".mailfleet_postmap.", dir=d)
            open(os.path.join(bare, "main.cf"), "w").close()
            argv[1:1] = ["-c", bare]
        try:
            subprocess.run(argv, check=True, capture_output=True, timeout=60)
        finally:
            if "-c" in argv:
                shutil.rmtree(argv[2], ignore_errors=True)
        os.replace(tmp + ".db", path + ".db")
        os.replace(tmp, path)
    finally:
        for p in (tmp, tmp + ".db"):
            if os.path.exists(p):
                os.unlink(p)


# The detector's directory: fixed by the engine stanza (mailfleet_watch.ENGINE_STANZA).
WATCH_DIR = "/var/lib/mailfleet/watch"


def _forget(users, watch_dir=WATCH_DIR, wait=5.0):
    """Ask the host's detector to drop the counts of released ``users``: without this the
    mail they sent before the release, still in its window, holds them again at their next
    message. Waits (bounded) for the detector to confirm; returns "confirmed", "not
    confirmed" (it will still read the request) or "no detector"."""
    import json
    import uuid
    if not os.path.isdir(watch_dir):
        return "no detector"
    rid = uuid.uuid4().hex
    path = os.path.join(watch_dir, "forget.json")
    mailfleet_files.write_json(path, {"id": rid, "users": sorted(users), "time": time.time()})
    ended = time.monotonic() + wait
    while time.monotonic() < ended:
        try:
            with open(os.path.join(watch_dir, "status.json"), encoding="utf-8") as fh:
                if json.load(fh).get("forgot") == rid:
                    return "confirmed"
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return "not confirmed"


def _run(argv, inp=None):
    proc = subprocess.run(argv, input=inp, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed: {(proc.stderr or proc.stdout)[:300]}")
    return proc


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


def _lifetimes():
    try:
        out = __salt__["cmd.run_stdout"](
            [_bin("postconf"), "-h", "maximal_queue_lifetime", "bounce_queue_lifetime"],
            python_shell=False, ignore_retcode=True)
    except Exception:  # noqa: BLE001
        return []
    return out.split()
# At most this many queue files are read for their SASL login per sync (postcat each).
MAX_LOGINS = 10_000
_LOGIN_RE = re.compile(r"^named_attribute: sasl_username=(.*)$", re.M)


def login_of(envelope):
    """The SASL login recorded in a queue file's envelope (``postcat -e`` text), lower-case;
    "" when the message was not submitted by an authenticated client."""
    m = _LOGIN_RE.search(envelope or "")
    return m.group(1).strip().lower() if m else ""


def _login_candidates(msgs, held, released):
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


def _logins(qids):
    """{queue id: login} from the queue files (postcat -e); a message gone meanwhile is left out."""
    out = {}
    for qid in qids:
        proc = subprocess.run([_bin("postcat"), "-e", "-q", qid], capture_output=True, text=True,
                              timeout=30, errors="replace")
        if proc.returncode == 0:
            out[qid] = login_of(proc.stdout)
    return out


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


def _seq_path(path):
    return path + ".seq"


# Out-of-order pushes arrive seconds apart: a newer map applied longer ago than this no
# longer makes an older one ignored (a ledger started afresh numbers from 1 again, and the
# level-triggered reconcile must converge the host to it).
SEQ_MEMORY = 600


def _stored_seq(path, now=None):
    try:
        if (now or time.time()) - os.stat(_seq_path(path)).st_mtime > SEQ_MEMORY:
            return None
        with open(_seq_path(path), encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def sync(holds=None, release=None, test=False, seq=None):
    """
    Make the host follow ``holds`` ({user: mode}; default pillar ``mailfleet_sasl_holds``).

    ``release``: users whose held messages are released even if the map no longer names them
    (the runner passes the user it releases). ``seq``: the ledger's sequence number of this
    map; a map older than the one applied last is ignored (pushes arrive in any order).
    Returns what changed.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_sasl_hold.sync test=True
    """
    if holds is None:
        holds, seq = _fresh_holds()
        if holds is None:
            return {"result": True, "comment": "pillar mailfleet_sasl_holds absent: nothing to do", "changes": {}}
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise ValueError(f"seq must be a non-negative integer, not {seq!r}")
    stored = _stored_seq(map_path()) if seq is not None else None
    if seq is not None and stored is not None and seq < stored:
        return {"result": True, "changes": {}, "comment": f"hold map {seq} is older than the one in force ({stored}): ignored"}
    holds = check_holds(holds)
    release = [_valid_user(u) for u in (release or [])]
    path = map_path()
    current = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            current = parse_map(fh.read())
    exists = os.path.exists(path + ".db")
    # The queue matters only when someone is (or was) held; on a host's first run Postfix
    # has no main.cf yet and postqueue cannot even start.
    someone = bool(holds) or bool(release) or bool(set(current) - set(holds))
    if someone and os.path.exists(os.path.join(_postfix_dir(), "main.cf")):
        msgs, truncated = mailfleet_postqueue.read_queue()
    else:
        msgs, truncated = [], False
    released_now = (set(release) | set(current)) - set(holds)
    logins = _logins(_login_candidates(msgs, set(holds), released_now)) if msgs else {}
    after = requeue_after(_lifetimes()) if released_now else REQUEUE_AFTER
    todo = plan(holds, current, msgs, release, logins=logins, requeue_after=after)
    changes = {}
    if todo["map"] or not exists:
        changes["map"] = {"old": current, "new": holds}
    if todo["hold_ids"]:
        changes["held"] = todo["hold_ids"]
    if todo["release_ids"]:
        changes["released"] = todo["release_ids"]
    if todo["requeue_ids"]:
        changes["requeued"] = todo["requeue_ids"]
    if test:
        return {"result": None if changes else True, "changes": changes, "truncated": truncated,
                "comment": "would change" if changes else "in sync"}
    if "map" in changes:
        _write_map(path, render_map(holds))
        # smtpd re-opens a changed hash map only after its current session; reload so the
        # next connection is served by processes that see it.
        if __salt__["service.status"]("postfix"):
            _run([_bin("postfix"), "reload"])
    if todo["hold_ids"]:
        _run([_bin("postsuper"), "-h", "-"], "\n".join(todo["hold_ids"]) + "\n")
    if todo["release_ids"]:
        _run([_bin("postsuper"), "-H", "-"], "\n".join(todo["release_ids"]) + "\n")
        for qid in todo["release_ids"]:
            subprocess.run([_bin("postqueue"), "-i", qid], capture_output=True, timeout=60)
    if todo["requeue_ids"]:
        # out of the hold queue through pickup: a new queue id and arrival time, sent at once
        _run([_bin("postsuper"), "-r", "-"], "\n".join(todo["requeue_ids"]) + "\n")
    if todo["released"] and (release or "map" in changes):
        changes["forgotten"] = _forget(todo["released"])
    if seq is not None and seq != stored:
        mailfleet_files.write_atomic(_seq_path(path), f"{seq}\n", mode=0o644, folder_mode=0o755)
    if changes:
        log.info("mailfleet_sasl_hold: %s", changes)
    return {"result": True, "changes": changes, "truncated": truncated,
            "comment": "changed" if changes else "in sync", "time": time.time()}


def status():
    """
    The map's users and the held messages of each (envelope sender).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_sasl_hold.status
    """
    path = map_path()
    current = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            current = parse_map(fh.read())
    msgs, truncated = mailfleet_postqueue.read_queue()
    return {"holds": current, "truncated": truncated,
            "held_messages": {u: mailfleet_postqueue.ids_of_senders(msgs, [u], ("hold",)) for u in current}}
