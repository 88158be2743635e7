"""
Lab test 58: bans hold through faults (issue 6).

- mail02's minion is stopped (the host is cut off from the master; lab hosts are never
  rebooted) while mail01 reports a relay prober: the ban lands on mail01 at once, and on
  mail02 as soon as its minion is back (the minion-start reactor reconciles its ban sets
  from the master's ledger), with the ban's remaining time, not a fresh one.
- the salt-master is restarted: the ledger is on disk, so the ban is still listed and can
  still be lifted everywhere.

The addresses are synthetic, from 198.19.210.0/24 (no lab host uses 198.19.0.0/16).
"""
import json
import time
from datetime import datetime, timezone

import pytest

from conftest import salt_run
from mflab import fleet

PROBER = "198.19.210.7"


def relay_lines(ip: str, n: int = 3) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return "".join(f"{stamp} mail01 postfix/smtpd[{31000 + k}]: NOQUEUE: reject: RCPT from unknown[{ip}]: "
                   f"554 5.7.1 <v{k}@elsewhere.test>: Relay access denied; from=<s@fault.test> "
                   f"to=<v{k}@elsewhere.test> proto=ESMTP helo=<fault>\n" for k in range(n))


def ban_timeout_left(lab, host: str, ip: str) -> float | None:
    """Seconds left on the ban of ``ip`` in ``host``'s set, or None when it is not there."""
    out = lab.run(host, "nft", "-j", "list", "set", "inet", "mailfleet", "banned_v4").stdout
    for item in json.loads(out)["nftables"]:
        for elem in (item.get("set") or {}).get("elem") or []:
            if isinstance(elem, dict) and str(elem.get("elem", {}).get("val")) == ip:
                return float(elem["elem"].get("expires", 0))
            if elem == ip:
                return float("inf")
    return None


def wait_for(pred, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def minion_running(lab, host: str) -> bool:
    return lab.run(host, "systemctl", "is-active", "salt-minion", check=False).stdout.strip() == "active"


@pytest.fixture
def prober_unbanned(lab, converged):
    salt_run("mailfleet_defense.unban", PROBER, timeout=120)
    yield
    for host in lab.mail_hosts:  # never leave a host cut off, whatever failed
        if not minion_running(lab, host):
            lab.run(host, "systemctl", "start", "salt-minion", check=False)
    fleet.wait_minions(sorted(f"{h}.lab.test" for h in lab.mail_hosts), timeout=120)
    salt_run("mailfleet_defense.unban", PROBER, timeout=120)


def test_a_host_cut_off_while_a_ban_is_decided_holds_the_ban_once_back(lab, prober_unbanned):
    assert all(ban_timeout_left(lab, h, PROBER) is None for h in lab.mail_hosts)
    lab.run("mail02", "systemctl", "stop", "salt-minion")
    try:
        lab.run("mail01", "sh", "-c", "cat >> /var/log/mail.log", input=relay_lines(PROBER))
        assert wait_for(lambda: ban_timeout_left(lab, "mail01", PROBER), 20), "mail01 never banned the prober"
        time.sleep(5)
        assert ban_timeout_left(lab, "mail02", PROBER) is None  # cut off: nothing reached it
        code, bans, out = salt_run("mailfleet_defense.bans")
        assert code == 0 and PROBER in {b["address"] for b in bans}, out[-2000:]
        time.sleep(10)  # the ban ages while mail02 is away
    finally:
        lab.run("mail02", "systemctl", "start", "salt-minion")
    left = wait_for(lambda: ban_timeout_left(lab, "mail02", PROBER), 120, step=1)
    assert left, "mail02 did not catch up with the ledger after its minion came back"
    on_mail01 = ban_timeout_left(lab, "mail01", PROBER)
    # the ban's own remaining time, not a fresh 10 minutes
    assert left <= 600 - 10 and abs(left - on_mail01) <= 30, (left, on_mail01)


def test_the_ledger_survives_a_master_restart(lab, prober_unbanned):
    lab.run("mail01", "sh", "-c", "cat >> /var/log/mail.log", input=relay_lines(PROBER))
    assert wait_for(lambda: all(ban_timeout_left(lab, h, PROBER) for h in lab.mail_hosts), 30), \
        "the prober was not banned on every host"
    code, before, out = salt_run("mailfleet_defense.bans")
    assert code == 0, out[-2000:]
    ours = [b for b in before if b["address"] == PROBER]

    fleet.restart_master()

    code, after, out = salt_run("mailfleet_defense.bans")
    assert code == 0, out[-2000:]
    assert [b for b in after if b["address"] == PROBER] == ours
    code, ret, out = salt_run("mailfleet_defense.unban", PROBER, timeout=120)
    assert code == 0 and ret["revoked"] >= 1, out[-2000:]
    assert wait_for(lambda: all(ban_timeout_left(lab, h, PROBER) is None for h in lab.mail_hosts), 30), \
        "the unban after the restart did not reach every host"
