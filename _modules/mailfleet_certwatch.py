"""
The certificates of this mail host, on demand, and the host side of a renewal: the master's
mailfleet_certs runner calls ``status``, ``renew`` and ``reload`` here when the
mailfleet_watch detector reports a problem. The checks are ``_utils/mailfleet_certcheck.py``
(imported plainly: Salt puts the utils directories on ``sys.path``); this module reads the
host's pillar and runs certbot and the service reloads.

Pillar ``mailfleet:defense:cert_*``: see ``_utils/mailfleet_certcheck.py``.
"""
import subprocess

import mailfleet_certcheck as _check

__virtualname__ = "mailfleet_certwatch"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("settings", "status", "renew", "reload")


def __virtual__():
    return __virtualname__


def _conf():
    d = (__salt__["pillar.get"]("mailfleet:defense", {}) or {})
    conf = {k[5:]: v for k, v in d.items() if isinstance(k, str) and k.startswith("cert_")}
    host = __salt__["pillar.get"]("mailfleet:host:myhostname") or __grains__["id"]
    if __grains__.get("os_family") == "FreeBSD":
        conf.setdefault("live_dir", "/usr/local/etc/letsencrypt/live")
    return _check.settings(conf, host)


def settings(conf, default_name=None):
    """
    The detector's certificate settings from ``conf`` (pillar ``mailfleet:defense:cert_*``
    without the prefix), checked: a ValueError names the pillar key. mail.defense calls it
    before it writes the detector's settings.

    CLI Example::

        salt mail01.lab.test mailfleet_certwatch.settings '{"threshold_days": 14}' mail01.lab.test
    """
    return _check.settings(conf, default_name)


def status(name=None):
    """
    Every watched lineage (or ``name``) now: days left on disk, what each port serves, problems.

    CLI Example::

        salt mail01.lab.test mailfleet_certwatch.status
    """
    conf = _conf()
    names = [name] if name else conf["lineages"]
    if not all(_check.valid_name(n) for n in names):
        raise ValueError(f"bad lineage name {name!r}")
    return {"threshold_days": conf["threshold_days"], "lineages": [_check.check_lineage(conf, n) for n in names]}


def renew(name, force=True, timeout=300):
    """
    certbot renew of one lineage (its renewal conf has server and authenticator); the
    deploy hooks run (mail.tls installs one that reloads postfix/dovecot/nginx).

    CLI Example::

        salt mail01.lab.test mailfleet_certwatch.renew mail01.lab.test
    """
    if not _check.valid_name(name):
        raise ValueError(f"bad lineage name {name!r}")
    argv = ["certbot", "renew", "--non-interactive", "--no-random-sleep-on-renew", "--cert-name", name]
    if force:
        argv.append("--force-renewal")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=int(timeout), check=False)
    return {"retcode": proc.returncode, "output": (proc.stdout + proc.stderr)[-2000:]}


def reload():
    """
    Reload the services that serve the certificate (postfix, dovecot, nginx if present).

    CLI Example::

        salt mail01.lab.test mailfleet_certwatch.reload
    """
    out = {}
    freebsd = __grains__.get("os_family") == "FreeBSD"
    for svc in ("postfix", "dovecot", "nginx"):
        argv = ["service", svc, "reload"] if freebsd else ["systemctl", "reload", svc]
        if not freebsd and subprocess.run(["systemctl", "is-active", "-q", svc], check=False).returncode:
            out[svc] = "not running"
            continue
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        out[svc] = "reloaded" if proc.returncode == 0 else f"failed: {(proc.stdout + proc.stderr)[-300:]}"
    return out
