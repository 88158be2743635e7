"""
Password hashes for mailbox pillar, made and checked by the mail host's own Dovecot.

``hash`` runs ``doveadm pw -s SCHEME -V`` and ``verify`` runs ``doveadm pw -t HASH``. The
password reaches doveadm on its standard input, never on its command line, so it does not
show in the process list; this module never logs it, and it calls doveadm directly (not
through ``cmd.run``, whose logging would name the command and could show its output).

Note that a password given to any Salt function travels as a job argument: it is in the
job's publication on the master and, unless the job cache is off, in the master's job
cache. Where that matters, hash on the master with the runner instead (``salt-run
mailfleet_password.hash``), which prompts for the password.

Schemes (what pillar accepts, see mailfleet_vusers): ``ARGON2ID`` (default),
``SHA512-CRYPT``, ``BLF-CRYPT``. Output is Dovecot's own ``{SCHEME}...`` string, e.g.
``{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$<salt>$<hash>``.
"""
import os
import shutil
import subprocess

from salt.exceptions import CommandExecutionError, SaltInvocationError

# salt://_utils (on sys.path): the runner checks with the same rules; private names here,
# so that the loader does not list them as functions of this module.
from mailfleet_password_rules import check_password as _check_password
from mailfleet_password_rules import check_scheme as _check_scheme

__virtualname__ = "mailfleet_password"

_DOVEADM_PATHS = ("/usr/bin/doveadm", "/usr/local/bin/doveadm")
TIMEOUT = 60


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("hash", "verify")


def _doveadm():
    return shutil.which("doveadm") or next((p for p in _DOVEADM_PATHS if os.access(p, os.X_OK)), None)


def __virtual__():
    if _doveadm():
        return __virtualname__
    return (False, "mailfleet_password: doveadm not found (run it on a mail host; on the "
                   "master use the runner: salt-run mailfleet_password.hash)")


def _run(argv, stdin):
    try:
        return subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandExecutionError(f"{argv[0]} {argv[1]} failed: {exc.__class__.__name__}") from None


def hash(password, scheme="ARGON2ID", rounds=None):
    """
    Hash ``password`` with ``doveadm pw`` on this mail host; returns ``{SCHEME}...``.

    The password goes to doveadm on stdin (typed twice, as doveadm asks), and ``-V`` makes
    doveadm verify the new hash against it before printing it.

    scheme
        ``ARGON2ID`` (default), ``SHA512-CRYPT`` or ``BLF-CRYPT``.
    rounds
        Passed as ``doveadm pw -r``: the bcrypt cost for BLF-CRYPT (Dovecot's default 5),
        the rounds for SHA512-CRYPT (default 5000), the time cost for ARGON2ID (default 3).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_password.hash 'correct horse battery'
        salt mail01.lab.test mailfleet_password.hash 'correct horse battery' scheme=BLF-CRYPT rounds=10
    """
    scheme = _check_scheme(scheme)
    _check_password(password, scheme)
    argv = [_doveadm(), "pw", "-s", scheme, "-V"]
    if rounds is not None:
        if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
            raise SaltInvocationError("rounds must be a positive integer")
        argv += ["-r", str(rounds)]
    proc = _run(argv, f"{password}\n{password}\n")
    out = proc.stdout.strip()
    suffix = " (verified)"
    # doveadm retries a mismatched pair and can end up hashing an empty line: accept only a
    # clean run (exit 0, nothing on stderr) whose output it verified itself.
    if proc.returncode != 0 or proc.stderr.strip() or not out.endswith(suffix) \
            or not out.startswith("{" + scheme + "}"):
        raise CommandExecutionError(f"doveadm pw -s {scheme} failed (exit {proc.returncode}): "
                                    f"{proc.stderr.strip()[:300]}")
    return out[: -len(suffix)]


def verify(password, hashed):
    """
    True when ``password`` matches ``hashed`` (a ``{SCHEME}...`` string), checked by
    ``doveadm pw -t``; False when it does not. A malformed hash or unknown scheme raises.

    The password goes on stdin; the hash is on doveadm's command line (there is no other
    way to give it), so it is visible in the process list for as long as doveadm runs.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_password.verify 'correct horse battery' '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$...'
    """
    _check_password(password)
    if not isinstance(hashed, str) or not hashed.startswith("{") or any(c in hashed for c in "\r\n\0"):
        raise SaltInvocationError("hashed must be a {SCHEME}-prefixed hash on one line")
    proc = _run([_doveadm(), "pw", "-t", hashed], f"{password}\n")
    if proc.returncode == 0 and proc.stdout.strip().endswith("(verified)"):
        return True
    if "reverse password verification check failed" in proc.stderr:
        return False
    raise CommandExecutionError(f"doveadm pw -t failed (exit {proc.returncode}): {proc.stderr.strip()[:300]}")
