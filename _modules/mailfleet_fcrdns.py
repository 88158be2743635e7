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
writes the Postfix table :func:`hold_table` makes.

CLI Example:

.. code-block:: bash

    salt mail01.lab.test mailfleet_fcrdns.check
"""
import ipaddress
import re

__virtualname__ = "mailfleet_fcrdns"

# RFC 3463: 4.7.x is a persistent transient security/policy status (the message is
# deferred and retried); the text is what `mailq` shows as the reason.
HOLD_STATUS = "4.7.1"
_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 .,:;()/_@=+-]")


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("check", "hold_table")


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------- pure parts

def _name(value):
    return str(value).strip().lower().rstrip(".") + "."


def usable_addresses(values):
    """The addresses other hosts see: loopback, link-local, unspecified, multicast out."""
    out = []
    for value in values or []:
        try:
            ip = ipaddress.ip_address(str(value).split("%")[0])
        except ValueError:
            continue
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
            continue
        if str(ip) not in out:
            out.append(str(ip))
    return sorted(out, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def evaluate(name, ip, ptrs, forward):
    """
    ``(ok, detail)`` of one address: ``ptrs`` the PTR names of ``ip`` (None: the lookup
    failed), ``forward`` the A/AAAA of ``name`` (None: failed). ok is True, False, or
    None when the answer is unknown.
    """
    want = _name(name)
    if ptrs is None:
        return None, f"{ip}: PTR lookup failed"
    names = sorted({_name(p) for p in ptrs})
    if want not in names:
        return False, (f"{ip}: PTR {', '.join(n.rstrip('.') for n in names) or 'none'}, "
                       f"want {want.rstrip('.')}")
    if forward is None:
        return None, f"{ip}: PTR {want.rstrip('.')} ok, its address lookup failed"
    addrs = {str(ipaddress.ip_address(a)) for a in forward}
    if str(ipaddress.ip_address(ip)) not in addrs:
        return False, (f"{ip}: PTR {want.rstrip('.')}, whose addresses are "
                       f"{', '.join(sorted(addrs)) or 'none'}: not forward-confirmed")
    return True, f"{ip}: PTR {want.rstrip('.')} -> {ip}"


def verdict(results):
    """Overall ok (True/False/None) of ``{ip: (ok, detail)}``: any False fails, else any
    None is unknown; no address at all is a failure (nothing can be confirmed)."""
    if not results:
        return False
    oks = [ok for ok, _ in results.values()]
    if any(ok is False for ok in oks):
        return False
    if any(ok is None for ok in oks):
        return None
    return True


def hold_reason(name, results):
    bad = [detail for ok, detail in results.values() if ok is False] or ["no address to check"]
    text = f"outbound mail held by mailfleet: FCrDNS of {name.rstrip('.')} fails ({'; '.join(bad)})"
    return _SAFE_TEXT.sub("_", text)[:400]


def hold_table(reason=None):
    """
    Text of the Postfix regexp table named by ``sender_dependent_default_transport_maps``
    when the hold switch is on. With a reason: one rule that sends every sender's mail for
    other domains (the default transport only: local and virtual domains are untouched)
    to the ``retry`` transport, which defers it with ``reason`` (mailq shows it; a flush
    defers it again). Without: no rule, the default transport applies.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_fcrdns.hold_table 'PTR of 198.18.0.11 missing'
    """
    head = ("# Managed by mailfleet (salt://mail/outbound_hold.sls): do not edit.\n"
            "# mailfleet:deliverability:hold_outbound_on_bad_ptr. A rule here defers all mail to\n"
            "# other domains (retry transport, 4.7.1) while this host's FCrDNS fails.\n")
    if not reason:
        return head + "# FCrDNS passes: outbound mail flows.\n"
    reason = _SAFE_TEXT.sub("_", str(reason)).strip()
    return head + f"/^/ retry:{HOLD_STATUS} {reason}\n"


def table_holds(text):
    """True when a table text (as :func:`hold_table` writes it) holds outbound mail."""
    return any(line.startswith("/") for line in (text or "").splitlines())


# ---------------------------------------------------------------- DNS (dnspython)

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
        addresses = usable_addresses(list(__grains__.get("ipv4", [])) +
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
        results[ip] = evaluate(name, ip, ptrs, forward)
    ok = verdict(results)
    return {"ok": ok, "name": _name(name).rstrip("."),
            "addresses": {ip: {"ok": o, "detail": d} for ip, (o, d) in results.items()},
            "reason": hold_reason(_name(name), results) if ok is False else None}
