"""
The ban path through real Salt daemons (pytest-salt-factories): one master and one minion,
shared by every test of the session.

    minion fires mailfleet/abuse/report -> master reactor (reactor/abuse.sls)
      -> runner mailfleet_defense.report -> ledger + cmd_async mailfleet_ban.add
      -> minion runs a REAL nft, inside a network namespace made for this test
         (minion option mailfleet_nft: [ip, netns, exec, <ns>, nft]; nothing touches this
         machine's own ruleset)

The event is fired with ``salt-call event.fire_master``, so Salt sets the sending minion's id
on it exactly as for the engine's events.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NS = f"mfitest{os.getpid()}"
SETS = """
table inet mailfleet {
  set banned_v4 { type ipv4_addr; flags timeout; timeout 600s; }
  set banned_v6 { type ipv6_addr; flags timeout; timeout 600s; }
}
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"),
                                reason="needs root, nft and ip (network namespace)")


@pytest.fixture(scope="session")
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], input=SETS, text=True, check=True)
        yield NS
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)


def ns_elements(name="banned_v4"):
    out = subprocess.run(["ip", "netns", "exec", NS, "nft", "-j", "list", "set", "inet", "mailfleet", name],
                         capture_output=True, text=True, check=True).stdout
    elems = {}
    for obj in json.loads(out)["nftables"]:
        for el in (obj.get("set") or {}).get("elem", []) or []:
            if isinstance(el, dict):
                elems[el["elem"]["val"]] = el["elem"].get("expires")
            else:
                elems[el] = None
    return elems


@pytest.fixture(scope="session")
def ledger_path(tmp_path_factory):
    return tmp_path_factory.mktemp("ledger") / "ledger.sqlite"


@pytest.fixture(scope="session")
def master(salt_factories, ledger_path):
    overrides = {
        "file_roots": {"base": [str(REPO / "salt")]},
        "module_dirs": [str(REPO / "salt")],
        "reactor": [{"mailfleet/abuse/report": ["salt://reactor/abuse.sls"]},
                    {"salt/minion/*/start": ["salt://reactor/minion_start.sls"]}],
        "mailfleet_ledger": str(ledger_path),
        "mailfleet_defense": {"allow": ["203.0.113.0/24"], "rate": 5, "period": 6},
        "schedule": {"mailfleet_defense_drain": {"function": "mailfleet_defense.drain", "seconds": 1}},
        "ext_pillar": [{"mailfleet_bans": {}}],
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon(f"mf-master-{uuid.uuid4().hex[:6]}", overrides=overrides)
    with factory.started(start_timeout=180):
        yield factory


@pytest.fixture(scope="session")
def minion(master, netns):
    factory = master.salt_minion_daemon(f"mf-minion-{uuid.uuid4().hex[:6]}",
                                        overrides={"mailfleet_nft": ["ip", "netns", "exec", netns, "nft"]})
    with factory.started(start_timeout=180):
        ret = factory.salt_call_cli(timeout=120).run("saltutil.sync_all")
        assert ret.returncode == 0, ret
        yield factory


@pytest.fixture(scope="session")
def fire(minion):
    cli = minion.salt_call_cli(timeout=60)

    def _fire(payload, tag="mailfleet/abuse/report"):
        # signed with the minion's own report key, as its detector signs (issue 13)
        ret = cli.run("mailfleet_signed.fire", json.dumps(payload), tag)
        assert ret.returncode == 0 and ret.data is True, ret
    return _fire


def wait_for(pred, timeout=60.0, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def ledger_rows(path):
    if not Path(path).exists():
        return []
    db = sqlite3.connect(path)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM bans ORDER BY id")]
    finally:
        db.close()


def report(host, *ips):
    return {"host": host, "interval": [0, 1], "events": {"relay": 3 * len(ips)},
            "offenders": [{"ip": ip, "rules": {"relay": 3}, "kinds": {"relay": 3}} for ip in ips],
            "outbound": [], "deferred": 0, "dropped": 0, "untracked": 0}


def test_event_reactor_runner_ban_applied(minion, fire, ledger_path):
    t0 = time.monotonic()
    fire(report(minion.id, "198.19.10.1", "2001:db8:10::1", "203.0.113.9", "not-an-ip"))
    assert wait_for(lambda: "198.19.10.1" in ns_elements(), timeout=90), ns_elements()
    latency = time.monotonic() - t0
    assert "2001:db8:10::1" in ns_elements("banned_v6")
    rows = ledger_rows(ledger_path)
    assert {r["address"] for r in rows} == {"198.19.10.1", "2001:db8:10::1"}  # allow-listed one refused
    assert all(r["reporter"] == minion.id and r["applied"] and r["timeout"] == 600 for r in rows)
    assert 590 <= ns_elements()["198.19.10.1"] <= 600
    print(f"salt-call event -> nft element: {latency:.2f} s (includes salt-call start-up)")


def test_forged_host_and_unsigned_reports_are_refused(minion, fire, ledger_path):
    fire(report("mail02.lab.test", "198.19.20.2"))  # signed with this minion's key, naming another host
    unsigned = minion.salt_call_cli(timeout=60).run("event.fire_master", json.dumps(report(minion.id, "198.19.20.4")),
                                                    "mailfleet/abuse/report")
    assert unsigned.returncode == 0, unsigned
    fire(report(minion.id, "198.19.20.3"))  # a genuine one after them, as a marker
    assert wait_for(lambda: "198.19.20.3" in ns_elements(), timeout=90)
    assert "198.19.20.2" not in ns_elements() and "198.19.20.4" not in ns_elements()
    assert not {"198.19.20.2", "198.19.20.4"} & {r["address"] for r in ledger_rows(ledger_path)}


def test_rate_cap_queues_the_excess_and_the_schedule_sends_it(master, minion, fire, ledger_path):
    ips = [f"198.19.30.{i}" for i in range(1, 13)]  # rate 5 per 6 s in this master's config
    fire(report(minion.id, *ips))
    assert wait_for(lambda: sum(1 for r in ledger_rows(ledger_path) if r["address"] in ips) == 12, timeout=90)
    rows = [r for r in ledger_rows(ledger_path) if r["address"] in ips]
    later = [r for r in rows if r["not_before"] > r["created"]]
    assert len(later) >= 7, "the excess over the rate waits its turn"
    assert len({r["not_before"] for r in rows}) >= 3
    # the master schedule (mailfleet_defense.drain) sends each when its turn comes: none dropped
    assert wait_for(lambda: all(a in ns_elements() for a in ips), timeout=90), ns_elements()
    rows = [r for r in ledger_rows(ledger_path) if r["address"] in ips]
    assert all(r["applied"] is not None and r["applied"] >= r["not_before"] for r in rows)
    # at most `rate` turns in any `period` (sending then follows within the drain's 1 s tick)
    turns = sorted(r["not_before"] for r in rows)
    assert all(sum(1 for x in turns if t <= x < t + 6) <= 5 for t in turns)
    assert all(r["applied"] - r["not_before"] < 30 for r in rows)
    # dedup: reporting an address again while banned records nothing new
    fire(report(minion.id, ips[-1]))
    time.sleep(3)
    assert sum(1 for r in ledger_rows(ledger_path) if r["address"] == ips[-1]) == 1


def test_unban_and_reconcile(master, minion, ledger_path):
    run = master.salt_run_cli(timeout=120)
    ret = run.run("mailfleet_defense.unban", "198.19.10.1")
    assert ret.returncode == 0 and ret.data["revoked"] == 1, ret
    assert wait_for(lambda: "198.19.10.1" not in ns_elements(), timeout=60)
    # a host that lost its sets catches up from the ledger (pillar via the ext_pillar)
    subprocess.run(["ip", "netns", "exec", NS, "nft", "flush", "set", "inet", "mailfleet", "banned_v6"], check=True)
    assert "2001:db8:10::1" not in ns_elements("banned_v6")
    ret = minion.salt_call_cli(timeout=120).run("mailfleet_ban.reconcile")
    assert ret.returncode == 0, ret
    assert "2001:db8:10::1" in ret.data["added"]
    assert "2001:db8:10::1" in ns_elements("banned_v6")
    assert "198.19.10.1" not in ns_elements()
    bans = run.run("mailfleet_defense.bans")
    assert "198.19.10.1" not in {b["address"] for b in bans.data}


def test_minion_start_reconciles_from_the_ledger(master, minion):
    """A host that lost its sets while its minion was down catches up when the minion starts."""
    before = ns_elements("banned_v6")
    assert "2001:db8:10::1" in before
    minion.terminate()
    subprocess.run(["ip", "netns", "exec", NS, "nft", "flush", "set", "inet", "mailfleet", "banned_v6"], check=True)
    assert ns_elements("banned_v6") == {}
    minion.start(start_timeout=180)
    assert wait_for(lambda: "2001:db8:10::1" in ns_elements("banned_v6"), timeout=90), \
        "salt/minion/<id>/start -> reactor -> mailfleet_ban.reconcile did not restore the ban"
