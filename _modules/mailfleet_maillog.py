"""
What the mail-log detector makes of a log file, on demand: the postmaster's view of the
parser (``_utils/mailfleet_logparse.py``) and the counter's rules
(``_utils/mailfleet_logcount.py``) that the mailfleet_watch detector runs continuously.
A thin execution module: the libraries are imported plainly (Salt puts the utils
directories on ``sys.path``).
"""
import os

import mailfleet_logcount
import mailfleet_logparse

__virtualname__ = "mailfleet_maillog"

_TOP_MAX = 1000


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("scan",)


def __virtual__():
    return __virtualname__


def scan(path="/var/log/mail.log", top=10):
    """
    Classify every line of ``path`` as the detector does and count: events per kind, and the
    ``top`` client addresses by events that count towards a ban rule, with their counts per
    rule (no window: the whole file). Outbound volume per SASL user is listed as
    ``outbound`` (messages and recipients). Nothing is reported to the master.

    CLI Example::

        salt mail01.lab.test mailfleet_maillog.scan
        salt mail01.lab.test mailfleet_maillog.scan /var/log/mail.log.1 top=20
    """
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= _TOP_MAX:
        raise ValueError(f"top must be an integer from 0 to {_TOP_MAX}, not {top!r}")
    if not os.path.isfile(path):
        raise ValueError(f"path {path!r} is not a file")
    events, nbytes = mailfleet_logparse.scan_file(path)
    kinds, per_ip, outbound = {}, {}, {}
    for ev in events:
        kinds[ev.kind] = kinds.get(ev.kind, 0) + ev.count
        if ev.kind in ("outbound", "outbound_rcpt"):
            if ev.user:
                slot = outbound.setdefault(ev.user, {"messages": 0, "recipients": 0})
                slot["messages" if ev.kind == "outbound" else "recipients"] += ev.count
            continue
        if ev.ip and ev.kind in mailfleet_logcount.RULE_OF_KIND:
            seen = per_ip.setdefault(ev.ip, {})
            seen[ev.kind] = seen.get(ev.kind, 0) + ev.count
    # per rule as the detector counts (one attempt logged twice counts once for "auth")
    per_ip = {ip: {r: n for r in sorted(set(mailfleet_logcount.RULE_OF_KIND.values()))
                   if (n := mailfleet_logcount.rule_count(r, seen))}
              for ip, seen in per_ip.items()}
    ranked = sorted(per_ip.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:top]
    return {"path": path, "bytes": nbytes, "events": dict(sorted(kinds.items())),
            "addresses": len(per_ip),
            "top": [{"ip": ip, "rules": dict(sorted(rules.items()))} for ip, rules in ranked],
            "outbound": dict(sorted(outbound.items(), key=lambda kv: -kv[1]["messages"])[:top])}
