"""The postmaster isolates a compromised mail02 in one step, and brings it back (issue 13).

mail02 (root on it, its own minion and report key) first floods the master with 100,000
bans in 20 signed reports of 5,000 (synthetic addresses of 2001:db8:f1::/48, documentation
space: nothing is sent to them): its rate's worth is banned, 10,000 wait their turn, the rest
is refused with a ban_queue_full alert naming mail02, and mail01's own report in the middle of
it still bans on every host at once. Isolating mail02 with ``unban=True`` drops its queue and
lifts its bans.

Then mail02 is listed, so mail01 admits it (mail02 relays through mail01, the usual state
of a listed host). Then `salt-run mailfleet_trust.isolate mail02.lab.test`: from that moment
mail01 no longer admits it, its reports are refused (signed with its own key, through its own
minion), its minion key is rejected, a host_isolated alert goes out; mail01's mail flow is
unchanged. `restore` and a restart of mail02's minion (the rebuilt host) bring it back: a new
report key, its reports are acted on again and it sends directly once delisted."""
import json
import time

from conftest import salt_run
from test_40_deliverability import nsupdate
from test_50_fleet_bans import _banned, _unban, reactor_live
from test_55_dnsbl import IP2, NAME, REACT, ZONE, alerts, postconf, wait, webhook
from test_60_compromised_host import ABUSE, H2, mail01_is_itself

PROBE = "198.19.61.1"  # synthetic: no lab host has it, nothing is sent to it
GENUINE = "198.19.61.2"
FLOOD, PER_REPORT = 100_000, 5_000

# Run inside mail02 with its own Salt: one process, 20 signed reports (an argv cannot carry
# 5,000 offenders: Linux caps one argument at 128 KiB).
FLOOD_SCRIPT = f"""
import ipaddress, salt.client, salt.config
caller = salt.client.Caller(mopts=salt.config.minion_config("/etc/salt/minion"))
net = ipaddress.ip_network("2001:db8:f1::/48")
for r in range({FLOOD // PER_REPORT}):
    offenders = [{{"ip": str(net[1 + r * {PER_REPORT} + i]), "rules": {{"relay": 9}}}} for i in range({PER_REPORT})]
    assert caller.cmd("mailfleet_signed.fire", {{"host": "{H2}", "offenders": offenders}}, "{ABUSE}")
print("flooded")
"""


def flood_rows():
    rc, rows, raw = salt_run("mailfleet_defense.bans", "all=True", timeout=300)
    assert rc == 0, raw[-2000:]
    return [r for r in rows if r["reporter"] == H2 and r["address"].startswith("2001:db8:f1:") and not r["revoked"]]


def in_force():
    rc, rows, raw = salt_run("mailfleet_defense.bans", timeout=120)
    assert rc == 0, raw[-2000:]
    return {r["address"] for r in rows}


def flood_banned(lab, host):
    out = lab.run(host, "nft", "list", "set", "inet", "mailfleet", "banned_v6", check=False).stdout
    return out.count("2001:db8:f1:")


def admitted_by_mail01(lab):
    return f"{IP2}/32" in postconf(lab, "mail01", "mynetworks").split()


def answers_master(lab):
    """mail02's minion answers a ping published by the master (not salt-call's own auth)."""
    try:
        return lab.salt(H2, "test.ping", timeout=20).get(H2) is True
    except AssertionError:  # no JSON: the minion did not answer yet
        return False


def mail02_reports(lab, address):
    """mail02's own signed report of ``address`` through its own minion (rc, output)."""
    body = {"host": H2, "offenders": [{"ip": address, "rules": {"relay": 9}}]}
    proc = lab.run("mail02", "/opt/salt/bin/salt-call", "--out=json", "mailfleet_signed.fire",
                   json.dumps(body), ABUSE, check=False, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_an_isolated_mail02_is_no_longer_admitted_and_its_reports_are_refused(lab, converged, reactor_live,
                                                                           webhook):
    t0 = time.time()
    flooded = False
    try:
        # the flood: bounded, refused beyond the bounds, alerted; mail01's report still acts
        out = lab.run("mail02", "/opt/salt/bin/python3", "-c", FLOOD_SCRIPT, timeout=600).stdout
        assert "flooded" in out, out[-2000:]
        flooded = True
        lab.salt("mail01.lab.test", "mailfleet_signed.fire",
                 json.dumps({"host": "mail01.lab.test", "offenders": [{"ip": GENUINE, "rules": {"relay": 9}}]}),
                 ABUSE, timeout=60)
        wait(lambda: all(_banned(lab, h, GENUINE) for h in ("mail01", "mail02")), 60,
             "mail01's genuine report banned on every host during mail02's flood")
        wait(lambda: alerts(webhook, "ban_queue_full", H2), 300, "the ban_queue_full alert naming mail02")
        counts = []
        wait(lambda: counts.append(len(flood_rows())) or counts[-2:] == [counts[-1]] * 2 and counts[-1] > 0,
             300, "mail02's flood settled in the ledger", step=5)
        rows, minutes = flood_rows(), (time.time() - t0) // 60 + 1
        applied = sum(1 for r in rows if r["applied"])
        queued = len(rows) - applied
        # the bounds as the postmaster reads them: 1000 bans a minute from one host, at most
        # 10,000 waiting, everything else of the 100,000 refused (never silently dropped)
        assert 0 < queued <= 10_000, queued
        assert 1000 <= applied <= 1000 * minutes, (applied, minutes)
        assert len(rows) < FLOOD // 5
        assert flood_banned(lab, "mail01") >= 1000
        print(f"flood of {FLOOD} bans from mail02: {applied} banned, {queued} queued, "
              f"{FLOOD - len(rows)} refused, settled after {time.time() - t0:.0f} s")

        nsupdate(ZONE, ("replace", NAME[IP2], "A", "127.0.0.2"))
        wait(lambda: admitted_by_mail01(lab), REACT, "mail01 admitting the listed mail02")

        standing = len(flood_rows())
        rc, out, raw = salt_run("mailfleet_trust.isolate", H2, "reason=lab test", "unban=True", timeout=300)
        assert rc == 0, raw[-2000:]
        assert out["report_key"] == "revoked" and "failed" not in json.dumps(out), out
        assert out["bans"]["dropped"] > 0 and out["bans"]["dropped"] + out["bans"]["lifted"] == standing, out["bans"]
        assert flood_rows() == []
        wait(lambda: flood_banned(lab, "mail01") == 0 and flood_banned(lab, "mail02") == 0, 60,
             "mail02's flood bans lifted on every host")
        assert _banned(lab, "mail01", GENUINE), "mail01's own ban was lifted with mail02's"
        rc, isolated, raw = salt_run("mailfleet_trust.isolated", timeout=120)
        assert H2 in isolated, isolated
        assert wait(lambda: alerts(webhook, "host_isolated", H2), 60, "the host_isolated alert")

        # mail01 stops admitting it (isolate converges the outbound plan), though still listed
        wait(lambda: not admitted_by_mail01(lab), REACT, "mail01 no longer admitting mail02")
        proc = lab.run("mail02", "/opt/salt/bin/salt-call", "--out=json", "test.ping", check=False, timeout=120)
        assert proc.returncode != 0, "mail02's minion still talks to the master after isolation"

        # its reports are refused: signed with its own key, through its own salt-call
        mail02_reports(lab, PROBE)
        time.sleep(10)
        assert PROBE not in in_force()
        assert not _banned(lab, "mail01", PROBE)
        mail01_is_itself(lab)
    finally:
        nsupdate(ZONE, ("delete", NAME[IP2], "A"))
        if flooded:  # whatever the test reached: no flood row may outlive it
            salt_run("mailfleet_defense.forget_reporter", H2, "unban=True", timeout=300)
        _unban(GENUINE)
        rc, out, raw = salt_run("mailfleet_trust.restore", H2, timeout=300)
        assert rc == 0, raw[-2000:]
        lab.run("mail02", "systemctl", "restart", "salt-minion", check=False, timeout=120)
    # back in: the new report key reaches it with its next highstate
    # the master's own ping: salt-call authenticates by itself, while the restarted daemon may
    # still be in its acceptance wait and would miss the state.apply below
    wait(lambda: answers_master(lab), 180,
         "mail02's minion accepted again and answering the master", step=5)
    ret = lab.salt(H2, "state.apply", "mail.defense", timeout=600)
    assert all(r.get("result") for r in ret[H2].values()), ret
    try:
        mail02_reports(lab, PROBE)
        wait(lambda: _banned(lab, "mail01", PROBE), 30, "mail02's report acted on again")
    finally:
        _unban(PROBE)
    wait(lambda: postconf(lab, "mail02", "relayhost") == "", REACT, "mail02 direct again")
    wait(lambda: not admitted_by_mail01(lab), REACT, "mail01 not admitting mail02")
    mail01_is_itself(lab)
    print(f"isolation scenario: {time.time() - t0:.0f} s")
