"""
The ritual across the fleet: every targeted mail host runs ``mailcheck.ritual`` against
itself, and the master prints one table (host, check, PASS/FAIL, detail).

The runner's job is marked failed (``success: False`` on the ``salt/run/<jid>/ret`` event,
``__context__['retcode'] = 1``) when any check fails or a host does not answer.

CLI Example:

.. code-block:: bash

    salt-run mailcheck.fleet
    salt-run mailcheck.fleet tgt=mail01.lab.test
    salt-run mailcheck.fleet tgt='G@os_family:Debian and *mail*' tgt_type=compound
    salt-run mailcheck.fleet checks=smtp,relay timeout=5
    salt-run mailcheck.fleet --out=json          # results only, as JSON (no table)
"""
import logging
import time

import salt.client

import mailfleet_table  # salt://_utils: on sys.path for runners

log = logging.getLogger(__name__)

__virtualname__ = "mailcheck"

# Keyword arguments of mailcheck.ritual a runner call may pass through to the minions.
RITUAL_KWARGS = ("host", "ip", "cafile", "timeout", "address", "password", "ports", "checks")


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("fleet",)


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------------------
# Pure logic (unit-tested in tests/unit/test_mailcheck_runner.py)
# ---------------------------------------------------------------------------------------


def _failure(detail):
    return [{"check": "minion", "ok": False, "detail": detail}]


NO_RETURN = "no return: minion down, unreachable or timed out"


def normalize_return(data):
    """
    One minion's job return (``cmd_iter`` with ``full_return``) as a list of result dicts.
    A minion that did not answer, lacks the module, or crashed becomes one failing
    ``minion`` line saying so.
    """
    if not isinstance(data, dict):
        return _failure(f"unexpected return: {data!r}")
    if data.get("failed"):
        return _failure(NO_RETURN)
    ret = data.get("ret")
    if isinstance(ret, list) and all(isinstance(r, dict) and "check" in r for r in ret):
        return [{"check": str(r["check"]), "ok": r.get("ok") is True,
                 "detail": str(r.get("detail", ""))} for r in ret]
    lines = str(ret).strip().splitlines()
    # "'mailcheck.ritual' is not available." or a traceback: its last line says why.
    why = lines[-1] if lines else repr(ret)
    return _failure(f"ritual did not run (retcode {data.get('retcode')}): {why}")


def failing(returns):
    """``[(minion, result), ...]`` of the failing checks."""
    return [(minion, r) for minion, results in sorted(returns.items()) for r in results
            if r.get("ok") is not True]


def fleet_table(returns):
    """
    ``{minion: [results]}`` as one text table (HOST, CHECK, RESULT, DETAIL) with a summary
    line. Pure: no Salt, no network.
    """
    rows = []
    for minion, results in sorted(returns.items()):
        for r in results:
            rows.append((minion, r.get("check", "?"), "PASS" if r.get("ok") is True else "FAIL",
                         r.get("detail", "")))
    if not rows:
        return "no mail host answered (no minion matched the target?)"
    bad = failing(returns)
    hosts_bad = sorted({m for m, _ in bad})
    if bad:
        summary = (f"FAIL: {len(bad)} of {len(rows)} checks failed on "
                   f"{len(hosts_bad)} of {len(returns)} hosts ({', '.join(hosts_bad)})")
    else:
        summary = f"PASS: {len(rows)} checks on {len(returns)} hosts"
    return mailfleet_table.render(("HOST", "CHECK", "RESULT", "DETAIL"), rows) + "\n" + summary


def ritual_kwargs(kwargs):
    """The keyword arguments to pass on to ``mailcheck.ritual`` (Salt's ``__pub_*`` keys
    dropped); anything else is a usage error."""
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    unknown = sorted(set(kwargs) - set(RITUAL_KWARGS))
    if unknown:
        raise ValueError(f"unknown argument(s) {', '.join(unknown)}; "
                         f"mailcheck.ritual takes {', '.join(RITUAL_KWARGS)}")
    return kwargs


# ---------------------------------------------------------------------------------------
# Salt entry point
# ---------------------------------------------------------------------------------------


def _collect(tgt, tgt_type, kwarg, wait):
    """Every matched host's ritual; a host that did not answer (reconnecting) is asked again
    until ``mailfleet_ask_bound`` seconds (master config, default 60) have passed."""
    returns, first = {}, True
    end = time.monotonic() + float(__opts__.get("mailfleet_ask_bound", 60))
    with salt.client.LocalClient(mopts=__opts__) as client:
        while True:
            ask = (tgt, tgt_type) if first else (sorted(m for m, r in returns.items() if _no_return(r)), "list")
            for item in client.cmd_iter(ask[0], "mailcheck.ritual", kwarg=kwarg, tgt_type=ask[1],
                                        timeout=wait, expect_minions=True):
                for minion, data in (item or {}).items():
                    returns[minion] = normalize_return(data)
            first = False
            if not any(_no_return(r) for r in returns.values()) or time.monotonic() + 2 >= end:
                return returns
            time.sleep(2)


def _no_return(results):
    return len(results) == 1 and results[0]["check"] == "minion" and results[0]["detail"] == NO_RETURN


# Outputs read by programs: the table would corrupt them, so it is left out.
MACHINE_OUTPUTS = ("json", "yaml", "raw", "pprint", "newline_values_only", "key", "txt")


def _show(text):
    """Print the table on the runner's console (salt-run), unless output is for programs."""
    if __opts__.get("quiet") or __opts__.get("output") in MACHINE_OUTPUTS:
        return
    print(text, flush=True)


def fleet(tgt="*mail*", tgt_type="glob", **kwargs):
    """
    Run ``mailcheck.ritual`` on every targeted mail host, print one table for the fleet and
    return ``{minion: [{"check", "ok", "detail"}, ...]}``. Any failing check, or a host
    that does not answer, marks the run failed (``__context__['retcode'] = 1``).

    tgt, tgt_type
        Which minions (default ``*mail*``, glob); any Salt target type.
    host, ip, cafile, timeout, address, password, ports, checks
        Passed on to ``mailcheck.ritual`` (see ``salt-run -d``/``sys.doc mailcheck.ritual``).

    CLI Example:

    .. code-block:: bash

        salt-run mailcheck.fleet
        salt-run mailcheck.fleet tgt=mail02.lab.test checks=submission,imaps
    """
    try:
        kwarg = ritual_kwargs(kwargs)
    except ValueError as exc:
        # Salt answers a TypeError with "Passed invalid arguments" and this docstring.
        __context__["retcode"] = 1
        raise TypeError(str(exc)) from exc
    # Seconds to wait for a host that has not answered yet; minions that report the job as
    # still running are waited for (Salt's find_job), so a slow ritual is not cut off.
    wait = max(int(__opts__.get("timeout", 5) or 5), int(float(kwarg.get("timeout", 10))) * 2)
    returns = _collect(tgt, tgt_type, kwarg, wait)
    _show(fleet_table(returns))
    bad = failing(returns)
    if not returns or bad:
        __context__["retcode"] = 1
        log.warning("mailcheck: %s", fleet_table(returns).splitlines()[-1])
        for minion, r in bad:
            log.info("mailcheck: %s %s FAIL: %s", minion, r["check"], r["detail"])
    else:
        __context__["retcode"] = 0
    return returns
