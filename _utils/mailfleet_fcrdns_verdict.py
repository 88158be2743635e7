"""
Forward-confirmed reverse DNS, the pure side: which addresses count, the verdict of one
address from its PTR and forward answers (``None`` for a lookup that could not be made:
unknown, never a failure), the host's overall verdict, and the Postfix table that holds
outbound mail while it fails. The lookups are the mailfleet_fcrdns module's. No Salt, no
DNS: imported plainly (Salt puts the utils directories on ``sys.path``).
"""
import ipaddress
import re

__virtualname__ = "mailfleet_fcrdns_verdict"


def __virtual__():
    return __virtualname__


# RFC 3463: 4.7.x is a persistent transient security/policy status (the message is
# deferred and retried); the text is what `mailq` shows as the reason.
HOLD_STATUS = "4.7.1"


_SAFE_TEXT = re.compile(r"[^A-Za-z0-9 .,:;()/_@=+-]")


def absolute_name(value):
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
    want = absolute_name(name)
    if ptrs is None:
        return None, f"{ip}: PTR lookup failed"
    names = sorted({absolute_name(p) for p in ptrs})
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
