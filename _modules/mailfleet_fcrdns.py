"""
Forward-confirmed reverse DNS (FCrDNS) of this mail host, as the world's resolvers see it,
and the outbound hold it drives (no sending while the PTR does not name the host).

For every address the host sends from, the PTR must name the host (``myhostname``, the
name in its HELO) and that name's A/AAAA must contain the address again. Receivers that
see anything else (no PTR, a generic provider name, a name that does not resolve back)
score the mail as spam or refuse it, so a host whose FCrDNS fails should keep its
outbound mail queued (deferred, never bounced) until its PTR is fixed.

``check()`` asks the configured resolver (``/etc/resolv.conf``, or the addresses in
``mailfleet:deliverability:resolver``) with dnspython. A lookup that cannot be made
(timeout, SERVFAIL, no server) is *unknown*, never a failure: a resolver outage must not
stop the mail of every host, and it does not release a hold either.

The ``mailfleet_outbound.held_while_fcrdns_fails`` state (``salt/mail/outbound_hold.sls``)
writes the Postfix table :func:`hold_table` makes. The verdicts and the table are
_utils/mailfleet_fcrdns_verdict.py; this module makes the lookups.

CLI Example:

.. code-block:: bash

    salt mail01.lab.test mailfleet_fcrdns.check
"""
import ipaddress

# salt://_utils: the verdicts and the hold table (pure)
from mailfleet_fcrdns_verdict import absolute_name as _name
from mailfleet_fcrdns_verdict import evaluate as _evaluate
from mailfleet_fcrdns_verdict import hold_reason as _hold_reason
from mailfleet_fcrdns_verdict import hold_table as _hold_table
from mailfleet_fcrdns_verdict import usable_addresses as _usable_addresses
from mailfleet_fcrdns_verdict import verdict as _verdict

__virtualname__ = "mailfleet_fcrdns"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("check", "hold_table")


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- pure parts


# ---------------------------------------------------------------- DNS (dnspython)

def hold_table(reason=None):
    """
    Text of the Postfix regexp table that holds outbound mail with ``reason`` (none: a
    table without rules, the default transport applies). The state
    ``mailfleet_outbound.held_while_fcrdns_fails`` writes it.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_fcrdns.hold_table 'PTR of 198.18.0.11 missing'
    """
    return _hold_table(reason)


def _resolver(servers=None, timeout=3.0):
    import dns.resolver

    res = dns.resolver.Resolver(configure=not servers)
    if servers:
        res.nameservers = [str(s) for s in servers]
    res.lifetime = float(timeout)
    res.timeout = float(timeout)
    return res


def _lookup(res, qname, rtype):
    """[text] of the answer; [] when the name or type does not exist; None when unknown."""
    import dns.exception
    import dns.resolver

    try:
        answer = res.resolve(qname, rtype, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.exception.DNSException):
        return None
    return [r.to_text() for r in answer]


def check(name=None, addresses=None, resolver=None, timeout=3):
    """
    FCrDNS of this host: ``{"ok": True|False|None, "name", "addresses": {ip: {"ok",
    "detail"}}, "reason"}``. ``name`` defaults to ``mailfleet:host:myhostname`` or the
    minion id; ``addresses`` to the host's usable addresses (grains); ``resolver`` (a list
    of addresses) to ``mailfleet:deliverability:resolver`` or the system resolver.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_fcrdns.check
    """
    mf = __pillar__.get("mailfleet", {}) if "__pillar__" in globals() else {}
    mf = mf if isinstance(mf, dict) else {}
    if not name:
        name = (mf.get("host") or {}).get("myhostname") or __grains__["id"]
    if addresses is None:
        addresses = _usable_addresses(list(__grains__.get("ipv4", [])) +
                                     list(__grains__.get("ipv6", [])))
    elif isinstance(addresses, str):
        addresses = [a for a in addresses.split(",") if a.strip()]
    if resolver is None:
        resolver = (mf.get("deliverability") or {}).get("resolver")
    if isinstance(resolver, str):
        resolver = [resolver]
    res = _resolver(resolver, timeout)
    results = {}
    for ip in addresses:
        rev = ipaddress.ip_address(ip).reverse_pointer + "."
        ptrs = _lookup(res, rev, "PTR")
        forward = None
        if ptrs is not None and _name(name) in {_name(p) for p in ptrs}:
            rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
            forward = _lookup(res, _name(name), rtype)
        results[ip] = _evaluate(name, ip, ptrs, forward)
    ok = _verdict(results)
    return {"ok": ok, "name": _name(name).rstrip("."),
            "addresses": {ip: {"ok": o, "detail": d} for ip, (o, d) in results.items()},
            "reason": _hold_reason(_name(name), results) if ok is False else None}
