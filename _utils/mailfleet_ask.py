"""
Ask the fleet and wait, within a bound, for hosts that are reconnecting (issue 12).

A runner that gathers facts from every targeted host (grains for DNS records, the mailcheck
ritual) must not fail the whole run because one host is between two connections (a minion
restarted by hand, a link that flapped, a master that just came back). Salt's LocalClient
gives up on a minion that does not answer within ``timeout``; ``ask`` asks the ones that
did not answer again, with the same function, until every minion the target matches
(accepted keys, Salt's own matcher) has answered or ``bound`` seconds have passed. Hosts
that never answered are returned as missing: the caller says so, it does not guess.
"""
import logging
import time

log = logging.getLogger(__name__)


def expected(opts, tgt, tgt_type="glob"):
    """The accepted minions the target matches (no network round trip)."""
    import salt.utils.minions
    found = salt.utils.minions.CkMinions(opts).check_minions(tgt, tgt_type)
    return set(found.get("minions") or [])


def ask(opts, tgt, fun, *, arg=(), kwarg=None, tgt_type="glob", timeout=None, bound=60.0,
        answered=None, client=None, pause=2.0):
    """
    ``(returns, missing)``: ``{minion: return}`` from the minions that answered and the
    sorted list of those matched that did not within ``bound`` seconds.

    answered
        ``answered(minion, value) -> bool``: whether a return counts (default: anything but
        None); a minion whose return does not count is asked again.
    client
        A LocalClient (default: one made from ``opts`` and closed here).
    """
    import salt.client
    want = expected(opts, tgt, tgt_type)
    timeout = int(timeout or opts.get("timeout", 20) or 20)
    answered = answered or (lambda _m, value: value is not None)
    own = client is None
    client = client or salt.client.LocalClient(mopts=opts)
    returns, end, first = {}, time.monotonic() + float(bound), True
    try:
        while True:
            if first:
                got = client.cmd(tgt, fun, arg=list(arg), kwarg=kwarg or {}, tgt_type=tgt_type, timeout=timeout)
            else:
                got = client.cmd(sorted(want - set(returns)), fun, arg=list(arg), kwarg=kwarg or {},
                                 tgt_type="list", timeout=timeout)
            for minion, value in (got or {}).items():
                if answered(minion, value):
                    returns[minion] = value
            missing = want - set(returns)
            if not missing or time.monotonic() + pause >= end:
                break
            if first:
                log.info("mailfleet: %s: waiting up to %.0f s for %s", fun, bound, ", ".join(sorted(missing)))
            first = False
            time.sleep(pause)
    finally:
        if own:
            client.destroy()
    return returns, sorted(want - set(returns))
