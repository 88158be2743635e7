"""The postmaster isolates a compromised mail02 in one step, and brings it back (issue 13).

mail02 is listed first, so mail01 admits it (mail02 relays through mail01, the usual state
of a listed host). Then `salt-run mailfleet_trust.isolate mail02.lab.test`: from that moment
mail01 no longer admits it, its reports are refused (signed with its own key, through its own
minion), its minion key is rejected, a host_isolated alert goes out; mail01's mail flow is
unchanged. `restore` and a restart of mail02's minion (the rebuilt host) bring it back: a new
report key, its reports are acted on again and it sends directly once delisted."""
import json
import time

from conftest import salt_run
from test_40_deliverability import nsupdate
from test_50_fleet_bans import _banned, _unban, reactor_live  # noqa: F401
from test_55_dnsbl import IP2, NAME, REACT, ZONE, alerts, postconf, wait, webhook  # noqa: F401
from test_60_compromised_host import ABUSE, H2, ledger_addresses, mail01_is_itself

PROBE = "198.19.61.1"  # synthetic: no lab host has it, nothing is sent to it


def admitted_by_mail01(lab):
    return f"{IP2}/32" in postconf(lab, "mail01", "mynetworks").split()


def mail02_reports(lab, address):
    """mail02's own signed report of ``address`` through its own minion (rc, output)."""
    body = {"host": H2, "offenders": [{"ip": address, "rules": {"relay": 9}}]}
    proc = lab.run("mail02", "/opt/salt/bin/salt-call", "--out=json", "mailfleet_signed.fire",
                   json.dumps(body), ABUSE, check=False, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def test_an_isolated_mail02_is_no_longer_admitted_and_its_reports_are_refused(lab, converged, reactor_live,  # noqa: F811
                                                                           webhook):  # noqa: F811
    t0 = time.time()
    nsupdate(ZONE, ("replace", NAME[IP2], "A", "127.0.0.2"))
    try:
        wait(lambda: admitted_by_mail01(lab), REACT, "mail01 admitting the listed mail02")

        rc, out, raw = salt_run("mailfleet_trust.isolate", H2, "reason=lab test", timeout=300)
        assert rc == 0, raw[-2000:]
        assert out["report_key"] == "revoked" and "failed" not in json.dumps(out), out
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
        assert PROBE not in ledger_addresses()
        assert not _banned(lab, "mail01", PROBE)
        mail01_is_itself(lab)
    finally:
        nsupdate(ZONE, ("delete", NAME[IP2], "A"))
        rc, out, raw = salt_run("mailfleet_trust.restore", H2, timeout=300)
        assert rc == 0, raw[-2000:]
        lab.run("mail02", "systemctl", "restart", "salt-minion", check=False, timeout=120)
    # back in: the new report key reaches it with its next highstate
    wait(lambda: lab.run("mail02", "/opt/salt/bin/salt-call", "--out=json", "test.ping", check=False,
                         timeout=120).returncode == 0, 120, "mail02's minion accepted again")
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
