"""
The ritual a postmaster runs after every change to a mail host, run by the host against
itself with real clients: SMTP on 25 (banner, EHLO naming the host), submission on 587
(STARTTLS with a certificate that names the host, AUTH refused before TLS, a real login and
a wrong password refused), IMAPS on 993 (the same login), an open-relay attempt that must
be refused, the plaintext ports (143, 110) that must stay closed, and forward-confirmed
reverse DNS (the A record's PTR names the host, and that name resolves back).

This module is the Salt glue; the verdicts are ``_utils/mailfleet_mailcheck_verdicts.py``
and the protocol clients ``_utils/mailfleet_mailcheck_probes.py``.

Every check returns ``{"check": name, "ok": bool, "detail": why}``; ``detail`` quotes what
the server said (the SMTP reply, the TLS error, the names on the certificate).

The host connects to its own public address, so the traffic goes over the loopback
interface and the host firewall is not in the path: a "closed" port here means nothing
listens on it. The firewall itself is only seen from another host.

The module never sends DATA, and never sends the probe password before TLS is verified and
the certificate names the host. The relay check and the wrong-password check leave one
"Relay access denied" and one "authentication failed" line per run in the host's mail log,
from the host's own address.

Pillar (read unmasked, 3008 masks ``pillar.get`` in execution modules):

- ``mailfleet:host:myhostname``: the host name to test (default: the minion id)
- ``mailfleet:probe:address`` / ``mailfleet:probe:password``: a real mailbox to log in with

CLI Example:

.. code-block:: bash

    salt '*mail*' mailcheck.ritual
    salt mail01.lab.test mailcheck.ritual timeout=5
    salt mail01.lab.test mailcheck.ritual host=mail01.lab.test ip=198.18.0.11
    salt mail01.lab.test mailcheck.ritual checks=smtp,relay
    salt-call mailcheck.report
"""
import ipaddress

from salt.exceptions import CommandExecutionError

try:
    import dns.resolver  # noqa: F401  (the probes need dnspython)

    HAS_DNSPYTHON = True
except ImportError:  # pragma: no cover - dnspython is in the minion's venv
    HAS_DNSPYTHON = False

import mailfleet_mailcheck_probes as _p
import mailfleet_mailcheck_verdicts as _v

__virtualname__ = "mailcheck"

DEFAULT_CAFILE = "/etc/ssl/certs/ca-certificates.crt"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("ritual", "report")


def __virtual__():
    if not HAS_DNSPYTHON:
        return False, "mailcheck needs dnspython (pip install dnspython)"
    return __virtualname__


def _pillar(key, default=None):
    return __salt__["pillar.get"](key, default, unmask=True)


def ritual(host=None, ip=None, cafile=None, timeout=10, address=None, password=None,
           ports=None, checks=None):
    """
    Run the ritual against this host; returns a list of
    ``{"check": str, "ok": bool, "detail": str}``.

    host
        Name to test (EHLO name, TLS name, FCrDNS). Default: pillar
        ``mailfleet:host:myhostname``, else the minion id.
    ip
        Address to connect to. Default: the A record of ``host`` (a failing lookup fails
        every network check, with the DNS error as the reason).
    cafile
        Trust anchors for certificate verification. Default: the system store
        ``/etc/ssl/certs/ca-certificates.crt``.
    timeout
        Seconds per network operation (connect, each reply, each DNS lookup).
    address, password
        Probe mailbox; default pillar ``mailfleet:probe:address`` / ``:password``.
        (Given on the command line they land in the job cache: use for wrong ones only.)
    ports
        Override ports: ``{"smtp": 25, "submission": 587, "imaps": 993, "closed": [143, 110]}``.
    checks
        Run only these groups: ``smtp,submission,imaps,relay,closed,fcrdns``.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailcheck.ritual
        salt mail01.lab.test mailcheck.ritual timeout=5 checks=smtp,relay
        salt mail01.lab.test mailcheck.ritual ports='{"imaps": 143}'
        salt mail01.lab.test mailcheck.ritual password=wrong checks=submission,imaps
    """
    host = _v.norm_name(host or _pillar("mailfleet:host:myhostname") or __opts__.get("id"))
    cafile = cafile or DEFAULT_CAFILE
    user = address or _pillar("mailfleet:probe:address")
    password = password if password is not None else _pillar("mailfleet:probe:password")
    try:
        timeout = float(timeout)
        port = _v.merge_ports(ports)
        groups = _v.select(checks)
        ip = str(ipaddress.ip_address(str(ip))) if ip else None
    except ValueError as exc:
        raise CommandExecutionError(f"mailcheck.ritual: {exc}") from exc

    dns_error = None
    if not ip:
        addrs, dns_error = _p.resolve_addresses(host, timeout)
        ip = addrs[0] if addrs else None

    # The wrong-password attempt runs last: Dovecot delays every login from an address
    # after a failed one (auth penalty), which must not slow the probe's real logins.
    sub = {}

    def submission():
        steps, sub["go_on"] = _p.submission_steps(host, ip, port["submission"], cafile, user,
                                                password, timeout)
        sub["steps"] = steps
        return _v.result(f"submission-{port['submission']}", *_v.steps_verdict(steps))

    plan = []
    if "smtp" in groups:
        plan.append((f"smtp-{port['smtp']}", lambda: _p.check_smtp(host, ip, port["smtp"], timeout)))
    if "submission" in groups:
        plan.append((f"submission-{port['submission']}", submission))
    if "imaps" in groups:
        plan.append((f"imaps-{port['imaps']}", lambda: _p.check_imaps(
            host, ip, port["imaps"], cafile, user, password, timeout)))
    if "relay" in groups:
        plan.append(("relay-refused", lambda: _p.check_relay(
            host, ip, port["smtp"], user or f"mailcheck@{host}", timeout)))
    if "closed" in groups:
        for closed in port["closed"]:
            plan.append((f"closed-{closed}", lambda p=closed: _p.check_closed(ip, p, timeout)))
    if "fcrdns" in groups:
        plan.append(("fcrdns", lambda: _p.check_fcrdns(host, ip, timeout)))

    results = []
    for name, run in plan:
        if ip is None:
            results.append(_v.result(name, False, f"not tested: no address for {host} (A: {dns_error})"))
            continue
        results.append(_guarded(name, run))
    if sub.get("go_on"):
        name = f"submission-{port['submission']}"
        where = next(i for i, r in enumerate(results) if r["check"] == name)
        step = _guarded(name, lambda: _p.wrong_password_step(host, ip, port["submission"], cafile,
                                                          user, timeout))
        if isinstance(step, dict):  # the step crashed
            step = (False, step["detail"])
        results[where] = _v.result(name, *_v.steps_verdict(sub["steps"] + [step]))
    return results


def _guarded(name, run):
    """Run one check; a bug in it becomes a failing line, never a lost ritual."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001
        return _v.result(name, False, f"check crashed: {type(exc).__name__}: {exc}")


def report(**kwargs):
    """
    Run the ritual and return its table as text (for ``salt-call`` at the host).

    CLI Example:

    .. code-block:: bash

        salt-call mailcheck.report --out=txt
        salt mail01.lab.test mailcheck.report timeout=5 --out=txt
    """
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    return _v.table(ritual(**kwargs))
