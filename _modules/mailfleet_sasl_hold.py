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

Functions: ``sync`` (what the state and the runner call), ``status``, ``map_path``. The pure
side (holds checked, the map text, which messages, when to requeue) is
_utils/mailfleet_sasl_hold_plan.py; this module runs postconf, postsuper and postqueue.
"""
import logging
import os
import shutil
import subprocess
import tempfile
import time

import mailfleet_files  # salt://_utils: on sys.path for execution modules
import mailfleet_postqueue
from mailfleet_sasl_user import valid_user as _valid_user  # salt://_utils: the runner checks the same way
# the pure side: holds checked, the map, which messages, when to requeue
from mailfleet_sasl_hold_plan import check_holds as _check_holds
from mailfleet_sasl_hold_plan import login_candidates as _login_candidates
from mailfleet_sasl_hold_plan import login_of as _login_of
from mailfleet_sasl_hold_plan import parse_map as _parse_map
from mailfleet_sasl_hold_plan import plan as _plan
from mailfleet_sasl_hold_plan import render_map as _render_map
from mailfleet_sasl_hold_plan import REQUEUE_AFTER as _REQUEUE_AFTER
from mailfleet_sasl_hold_plan import requeue_after as _requeue_after

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_sasl_hold"

# Postfix logs at most 100 characters of a SASL name; keys must be one map token.


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("sync", "status", "map_path")


def __virtual__():
    return __virtualname__


# --- pure ----------------------------------------------------------------------------------


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


def _lifetimes():
    try:
        out = __salt__["cmd.run_stdout"](
            [_bin("postconf"), "-h", "maximal_queue_lifetime", "bounce_queue_lifetime"],
            python_shell=False, ignore_retcode=True)
    except Exception:  # noqa: BLE001
        return []
    return out.split()


def _logins(qids):
    """{queue id: login} from the queue files (postcat -e); a message gone meanwhile is left out."""
    out = {}
    for qid in qids:
        proc = subprocess.run([_bin("postcat"), "-e", "-q", qid], capture_output=True, text=True,
                              timeout=30, errors="replace")
        if proc.returncode == 0:
            out[qid] = _login_of(proc.stdout)
    return out


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
    holds = _check_holds(holds)
    release = [_valid_user(u) for u in (release or [])]
    path = map_path()
    current = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            current = _parse_map(fh.read())
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
    after = _requeue_after(_lifetimes()) if released_now else _REQUEUE_AFTER
    todo = _plan(holds, current, msgs, release, logins=logins, requeue_after=after)
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
        _write_map(path, _render_map(holds))
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
        # postsuper leaves them in maildrop without a wakeup (only postqueue -f sends one,
        # and that would flush the whole deferred queue too): kick pickup alone, else they
        # wait for its next poll (up to a minute). Postfix down: pickup finds them at start.
        subprocess.run([_bin("postkick"), "public", "pickup", "W"], capture_output=True, timeout=60)
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
            current = _parse_map(fh.read())
    msgs, truncated = mailfleet_postqueue.read_queue()
    return {"holds": current, "truncated": truncated,
            "held_messages": {u: mailfleet_postqueue.ids_of_senders(msgs, [u], ("hold",)) for u in current}}
