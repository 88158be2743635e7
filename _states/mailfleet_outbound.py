"""
Hold this host's outbound mail while its FCrDNS fails (never send while the PTR does not match: "STOP until
the PTR matches"), release it when it passes.

.. code-block:: yaml

    mailfleet-outbound-hold:
      mailfleet_outbound.held_while_fcrdns_fails:
        - name: /etc/postfix/mailfleet_outbound_hold.regexp
        - enabled: {{ switch }}            # mailfleet:deliverability:hold_outbound_on_bad_ptr

The check runs when the state is applied (``mailfleet_fcrdns.check``, through the
configured resolver); the table it writes is the one ``main.cf`` names in
``sender_dependent_default_transport_maps`` while the switch is on (see
``salt/mail/outbound_hold.sls``). Held mail is deferred by Postfix's ``retry`` transport,
never bounced. An FCrDNS that cannot be checked (resolver down) leaves the table as it is
and fails the state, saying why.
"""

import mailfleet_files  # salt://_utils: on sys.path while the state loader loads this

__virtualname__ = "mailfleet_outbound"
SWITCH_KEY = "mailfleet:deliverability:hold_outbound_on_bad_ptr"


def __virtual__():
    return __virtualname__


def _read(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(path, text):
    mailfleet_files.write_atomic(path, text, mode=0o644, folder_mode=0o755)


def held_while_fcrdns_fails(name, enabled=False, hostname=None, addresses=None,
                            resolver=None):
    """
    Write the hold table ``name``: a deferring rule while ``enabled`` and this host's
    FCrDNS fails, no rule otherwise.

    name
        Path of the Postfix regexp table.
    enabled
        The pillar switch ``mailfleet:deliverability:hold_outbound_on_bad_ptr``.
    hostname, addresses, resolver
        Passed to ``mailfleet_fcrdns.check`` (defaults: myhostname, the host's
        addresses, the system resolver).
    """
    ret = {"name": name, "changes": {}, "result": True, "comment": ""}
    fcr = __salt__["mailfleet_fcrdns.hold_table"]
    if not isinstance(enabled, bool):
        ret["result"] = False
        ret["comment"] = f"{SWITCH_KEY}: must be true or false, not {enabled!r}"
        return ret
    current = _read(name)
    if enabled:
        chk = __salt__["mailfleet_fcrdns.check"](name=hostname, addresses=addresses,
                                                   resolver=resolver)
        details = "; ".join(a["detail"] for a in chk["addresses"].values()) or "no address"
        if chk["ok"] is None:
            ret["result"] = False
            ret["comment"] = (f"FCrDNS of {chk['name']} could not be checked ({details}); "
                              "the outbound hold is left as it is")
            if current is not None:
                return ret
            want, what = fcr(None), "released"  # first run: nothing known to be wrong
        elif chk["ok"]:
            want, what = fcr(None), "released"
            ret["comment"] = f"FCrDNS of {chk['name']} passes ({details}): outbound mail flows"
        else:
            want, what = fcr(chk["reason"]), "held"
            ret["comment"] = (f"outbound mail HELD (deferred): FCrDNS of {chk['name']} fails "
                              f"({details}); fix the PTR, then apply again")
    else:
        want, what = fcr(None), "released"
        ret["comment"] = f"{SWITCH_KEY} is off: outbound mail is never held"
    if current == want:
        return ret
    ret["changes"] = {"outbound": what, "table": name}
    if __opts__.get("test"):
        ret["result"] = None if ret["result"] else ret["result"]
        ret["comment"] += f" (test: the table would be rewritten: outbound {what})"
        return ret
    _write(name, want)
    return ret
