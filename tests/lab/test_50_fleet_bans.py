"""
Lab test 50: the fleet bans a relay prober on EVERY host within seconds (issue 6).

attacker tries to relay through mail01 three times (the relay threshold); mail01's
mailfleet_watch engine reports it, the master's abuse reactor hands the report to the
mailfleet_defense runner, which bans attacker's address on mail01 AND mail02 (nft set
elements with a timeout). outside keeps its access; unbanning restores attacker's.
"""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ATTACKER = "198.18.0.101"


def salt_run(*args, timeout=300):
    """`salt-run --out=json ARGS` from the repo root: (exit code, parsed return, raw output)."""
    proc = subprocess.run([str(Path(sys.executable).parent / "salt-run"), "--out=json", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    return proc.returncode, data, proc.stdout + proc.stderr


def _reachable(lab, client, ip, port=25, wait=2):
    return lab.run(client, "nc", "-z", "-w", str(wait), ip, str(port), check=False).returncode == 0


def _banned(lab, host, addr):
    out = lab.run(host, "nft", "list", "set", "inet", "mailfleet", "banned_v4", check=False).stdout
    return addr in out


def _master_log():
    from mflab import fleet
    return (fleet.SALT_DIR / "master.log")


@pytest.fixture(scope="module")
def reactor_live(lab, converged):
    """The running master must have the abuse reactor (it reads its config at start only)."""
    marker = f"probe-{uuid.uuid4().hex[:8]}"
    log = _master_log()
    size = log.stat().st_size if log.exists() else 0
    host = "mail01.lab.test"
    lab.salt(host, "mailfleet_signed.fire", f'{{"host": "{host}", "offenders": [], "probe": "{marker}"}}',
             "mailfleet/abuse/report", timeout=60)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with open(log, "rb") as fh:
            fh.seek(size)
            if f"mailfleet_defense: report from {host}".encode() in fh.read():
                return True
        time.sleep(0.5)
    pytest.fail("the reactor stayed silent for 20 s: broken, or the lab master was started before the abuse reactor was configured "
                "(config/master.d/mailfleet.conf is read at master start): restart the lab")


def _unban(addr):
    rc, data, raw = salt_run("mailfleet_defense.unban", addr, timeout=120)
    assert rc == 0, raw


def test_relay_prober_is_banned_on_every_host_and_unbanned(lab, converged, reactor_live):
    hosts = lab.mail_hosts
    ips = {h: lab.ip(h) for h in hosts}
    _unban(ATTACKER)  # a previous run's ban, if any
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_banned(lab, h, ATTACKER) for h in hosts):
        time.sleep(0.5)
    for h in hosts:
        assert _reachable(lab, "attacker", ips[h]), f"attacker cannot reach {h}:25 before the test"

    for _ in range(3):
        proc = lab.run("attacker", "swaks", "--hide-informational", "--timeout", "20", "--server", ips["mail01"],
                       "--port", "25", "--ehlo", "attacker.lab.test", "--from", "x@attacker.lab.test",
                       "--to", "victim@elsewhere.test", check=False)
        assert "Relay access denied" in proc.stdout
    t0 = time.monotonic()

    seen = {}
    deadline = t0 + 15
    while time.monotonic() < deadline and len(seen) < len(hosts):
        for h in hosts:
            if h not in seen and _banned(lab, h, ATTACKER):
                seen[h] = time.monotonic() - t0
        time.sleep(0.05)
    print("ban latency (last relay reply -> element in the host's set): "
          + ", ".join(f"{h} {seen.get(h, float('nan')):.2f} s" for h in hosts))
    assert set(seen) == set(hosts), f"banned on {sorted(seen)} only"

    for h in hosts:
        assert not _reachable(lab, "attacker", ips[h]), f"attacker still reaches {h}:25"
        assert _reachable(lab, "outside", ips[h]), f"outside lost {h}:25"

    rc, bans, raw = salt_run("mailfleet_defense.bans")
    entry = [b for b in bans if b["address"] == ATTACKER]
    assert entry and entry[-1]["reporter"] == "mail01.lab.test" and entry[-1]["reason"].get("relay", 0) >= 3

    _unban(ATTACKER)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_banned(lab, h, ATTACKER) for h in hosts):
        time.sleep(0.2)
    for h in hosts:
        assert _reachable(lab, "attacker", ips[h]), f"attacker still cut off from {h}:25 after unban"


def test_forged_report_naming_another_host_is_refused(lab, converged, reactor_live):
    forged = "198.19.50.50"  # synthetic: receives no traffic
    claim = f'{{"host": "mail01.lab.test", "offenders": [{{"ip": "{forged}", "rules": {{"relay": 9}}}}]}}'
    # unsigned, and signed with mail02's own key: neither is mail01's word
    for fun in ("event.fire_master", "mailfleet_signed.fire"):
        lab.salt("mail02.lab.test", fun, claim, "mailfleet/abuse/report", timeout=60)
    time.sleep(5)
    for h in lab.mail_hosts:
        assert not _banned(lab, h, forged)
    rc, bans, raw = salt_run("mailfleet_defense.bans", "all=True")
    assert forged not in {b["address"] for b in bans}
