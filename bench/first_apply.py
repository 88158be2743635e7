#!/usr/bin/env python3
"""Benchmark: the first highstate of a bare host and the no-op one after it, per Debian release.

A fresh lab (brought down and up again, so both mail hosts are bare), mixed by default:
mail01 on Debian 12, mail02 on Debian 13. After the postmaster's two master-side steps
(`mailfleet_dkim.ensure`, `mailfleet_dns.publish`), both hosts get their first
`state.apply` at the same time (one `salt` process each, timed from here), then a second,
no-op, apply each, which must change nothing. Both releases share the same 2 cores in the
same run, so the figures compare with each other.

Run: `.venv/bin/python bench/first_apply.py`. Output: printed and bench/first_apply.out.
"""
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from mflab import config, fleet
from mflab.fleet import SALT_DIR, VENV_BIN

DOMAINS = ",".join(config.MAIL_DOMAINS)


def salt(*args: str, timeout: float = 1200) -> tuple[float, dict]:
    t0 = time.monotonic()
    proc = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                           "-t", str(int(timeout)), *args], capture_output=True, text=True, timeout=timeout)
    return time.monotonic() - t0, json.loads(proc.stdout or "{}")


def run(*args: str) -> None:
    proc = subprocess.run([str(VENV_BIN / "salt-run"), "-c", str(SALT_DIR), "--out=json", *args],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        raise SystemExit(f"salt-run {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


def apply(fqdn: str) -> tuple[float, int, int, int]:
    """(seconds, states, changed, failed) of one state.apply of one host."""
    seconds, ret = salt(fqdn, "state.apply")
    states = ret.get(fqdn)
    if not isinstance(states, dict):
        raise SystemExit(f"{fqdn}: no state return: {str(states)[:500]}")
    changed = sum(1 for s in states.values() if s.get("changes"))
    failed = sum(1 for s in states.values() if not s.get("result"))
    return seconds, len(states), changed, failed


def main() -> int:
    fleet.down()
    fleet.up()
    state = fleet.load_state()
    hosts = {h["fqdn"]: h.get("release", config.DEFAULT_RELEASE) for n, h in sorted(state["hosts"].items())
             if h["role"] == "mail"}
    run("mailfleet_dkim.ensure", f"domains={DOMAINS}")
    run("mailfleet_dns.publish", f"domains={DOMAINS}")
    with ThreadPoolExecutor(len(hosts)) as pool:
        first = dict(zip(hosts, pool.map(apply, hosts)))
    second = {fqdn: apply(fqdn) for fqdn in hosts}
    lines = [f"# bench/first_apply.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             "# a bare lab host's first `state.apply` (all mail hosts at once), then a no-op apply each;",
             "# machine: 2 cores, the whole lab running on it",
             f"{'host':<18} {'release':<10} {'first apply':>12} {'states':>7} {'changed':>8} {'failed':>7}"
             f" {'no-op apply':>12} {'changed':>8} {'failed':>7}"]
    ok = True
    for fqdn, release in hosts.items():
        f, s = first[fqdn], second[fqdn]
        lines.append(f"{fqdn:<18} {'Debian ' + config.RELEASES[release]:<10} {f[0]:>11.1f}s {f[1]:>7} {f[2]:>8}"
                     f" {f[3]:>7} {s[0]:>11.1f}s {s[2]:>8} {s[3]:>7}")
        ok = ok and f[3] == 0 and s[2] == 0 and s[3] == 0
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "first_apply.out").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
