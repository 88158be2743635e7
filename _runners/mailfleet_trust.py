"""
Taking a host out of the fleet's trust in one step, and back (issue 13).

For the postmaster who finds a mail host compromised::

    salt-run mailfleet_trust.isolate mail02.example.net reason="rootkit found"
    salt-run mailfleet_trust.isolated
    salt-run mailfleet_trust.restore mail02.example.net      # after a rebuild

``isolate``: the host's report key is revoked (its reports are refused from that moment:
_utils/mailfleet_report.py), the bans it reported that still wait their turn are dropped
(``unban=True``: the ones in force are lifted too), the outbound plan is converged without it (a peer that admitted
it into its mynetworks stops; it is no one's relay peer), its minion key is rejected (no
pillar, no secrets, no jobs any more) and a critical ``host_isolated`` alert says so.
``restore``: a new report key, the minion key accepted again, a ``host_restored`` alert; its
next highstate hands it the new key.
"""
import logging
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_events
import mailfleet_ledger
import mailfleet_report

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_trust"


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("isolate", "restore", "isolated")


def __virtual__():
    return __virtualname__


def _store():
    opts = __opts__
    return mailfleet_report.KeyStore(mailfleet_report.key_dir(opts, mailfleet_ledger.path(opts)))


def _wheel(fun, host, **kwarg):
    import salt.wheel
    return salt.wheel.WheelClient(__opts__).cmd(fun, [host], kwarg=kwarg, print_event=False)


def _alert(kind, subject, message, details=None, severity="warning"):
    return mailfleet_events.alert(__salt__, "mailfleet_trust", kind, subject, message, details, severity)


def _step(out, name, fun):
    try:
        out[name] = fun()
    except Exception as exc:  # noqa: BLE001
        log.exception("mailfleet_trust: %s", name)
        out[name] = f"failed: {type(exc).__name__}: {exc}"[:300]


def isolate(host, reason="", unban=False):
    """Revoke ``host``'s report key, drop the bans it reported that still wait their turn
    (``unban=True``: lift the ones in force too), converge the outbound plan without it,
    reject its minion key, alert. Each step's result is returned; a failed step does not stop
    the next.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_trust.isolate mail02.example.net reason="rootkit found" unban=True
    """
    store = _store()
    store.revoke(host)  # first: from here on nothing it reports is acted on
    out = {"host": host, "report_key": "revoked"}
    _step(out, "bans", lambda: {k: v for k, v in __salt__["mailfleet_defense.forget_reporter"](
        host, unban=unban).items() if k in ("dropped", "lifted")})
    _step(out, "outbound", lambda: __salt__["mailfleet_reroute.reconcile"]())
    _step(out, "minion_key", lambda: _wheel("key.reject", host, include_accepted=True))
    _alert("host_isolated", host, f"{host} isolated by the postmaster{': ' + str(reason)[:200] if reason else ''}: "
           "its reports are refused, no peer admits it, its minion key is rejected",
           details={k: v for k, v in out.items() if k not in ("outbound", "bans")}, severity="critical")
    return out


def restore(host):
    """
    A new report key for ``host`` and its minion key accepted again.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_trust.restore mail02.lab.test
    """
    _store().restore(host)
    out = {"host": host, "report_key": "new"}
    _step(out, "minion_key", lambda: _wheel("key.accept", host, include_rejected=True))
    _alert("host_restored", host, f"{host} restored to the fleet's trust: a new report key, minion key accepted",
           details=dict(out), severity="info")
    return out


def isolated():
    """
    The hosts whose report key is revoked, with the time of it.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_trust.isolated
    """
    import json
    import os
    store = _store()
    out = {}
    if not os.path.isdir(store.dir):
        return out
    for name in sorted(os.listdir(store.dir)):
        if name.endswith(".json") and not name.startswith("."):
            host = name[:-5]
            try:
                doc = store.load(host)
            except (ValueError, json.JSONDecodeError):
                continue
            if doc and doc.get("revoked"):
                out[host] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(doc.get("rotated") or 0))
    return out
