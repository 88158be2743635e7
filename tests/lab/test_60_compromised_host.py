"""A compromised mail02 cannot harm mail01 (issue 13), for real.

Root on mail02 is played by commands run inside mail02 with its own `salt-call` and minion
key (and so its own report key, which a compromised host holds). It tries, in turn:

1. an abuse report naming mail01 as its sender (unsigned, and signed with mail02's key);
2. a DNSBL listing of mail01 smuggled in as a batched event (Salt forwards their data as is);
3. foreign addresses in its ipv4 grain, then a real listing of its address in the lab DNSBL
   zone: mail01 admits it (for it to relay through mail01) with its inventory address only;
4. `0.0.0.0/0` in its ipv4 grain, then relay attempts from `attacker` on mail01: mail01's
   own genuine report bans attacker on every host (the positive control: the reactor is
   alive and acts on what it should);
5. holding alice@example-a.test, a user of a domain mail01 serves;
6. a report with a scoped IPv6 address next to a plain one: the plain one is banned on
   every host, the scoped one refused on its own.

Afterwards none of the attacks took effect, the refusals raised report_refused alerts naming
mail02, and mail01 still accepts mail from `outside`, refuses relaying and sends directly.
Everything is undone in `finally` (grains, listings, bans): later tests share the lab.

The flood of 100,000 bans from mail02 is played in tests/lab/test_61_isolate_host.py, where
isolating mail02 clears what it left in the ledger and on the hosts."""
import json
import time

import pytest

from conftest import salt_run
from mailtools import swaks, tag
from test_40_deliverability import nsupdate
from test_50_fleet_bans import ATTACKER, _banned, _reachable, _unban, reactor_live
from test_55_dnsbl import IP1, IP2, NAME, REACT, ZONE, alerts, postconf, wait, webhook

H1, H2 = "mail01.lab.test", "mail02.lab.test"
ABUSE, DNSBL = "mailfleet/abuse/report", "mailfleet/dnsbl/transition"
FOREIGN = "198.19.60.9"  # synthetic: no lab host has it


def call(lab, *args, check=True):
    """salt-call on mail02: the compromised host's own minion and keys."""
    return lab.run("mail02", "/opt/salt/bin/salt-call", "--out=json", *args, check=check, timeout=180)


def fake_grain(lab, values):
    call(lab, "grains.setval", "ipv4", json.dumps(values))
    call(lab, "saltutil.refresh_pillar", "wait=True")  # the master caches the new grains


def ledger_addresses():
    rc, bans, raw = salt_run("mailfleet_defense.bans", "all=True", timeout=120)
    assert rc == 0, raw[-2000:]
    return {b["address"] for b in bans}


def refused_alerts(subject):
    rc, rows, raw = salt_run("mailfleet_alert.recent", "hours=1", timeout=120)
    assert rc == 0, raw[-2000:]
    return [r for r in rows if r["kind"] == "report_refused" and r["subject"] == subject]


def mail01_is_itself(lab):
    assert postconf(lab, "mail01", "relayhost") == "" and postconf(lab, "mail01", "default_transport") == "smtp"
    ok = swaks(lab, "outside", "--server", H1, "--port", "25", "--ehlo", "outside.lab.test",
               "--from", "someone@outside.lab.test", "--to", "alice@example-a.test",
               "--header", f"Subject: {tag('still-accepts')}", check=False).stdout
    assert "250 2.0.0 Ok: queued" in ok, ok[-1500:]
    relay = swaks(lab, "outside", "--server", H1, "--port", "25", "--ehlo", "outside.lab.test",
                  "--from", "someone@outside.lab.test", "--to", "victim@elsewhere.test", check=False).stdout
    assert "Relay access denied" in relay, relay[-1500:]


def test_a_compromised_mail02_cannot_harm_mail01(lab, converged, reactor_live, webhook):
    t0 = time.time()
    before = len(refused_alerts(H2))
    synthetic = ["198.19.60.1", "198.19.60.2", "198.19.60.7"]
    try:
        # 1. reports in mail01's name
        claim = {"host": H1, "offenders": [{"ip": "198.19.60.1", "rules": {"relay": 9}}]}
        call(lab, "event.fire_master", json.dumps(claim), ABUSE)
        claim2 = {"host": H1, "offenders": [{"ip": "198.19.60.2", "rules": {"relay": 9}}]}
        call(lab, "mailfleet_signed.fire", json.dumps(claim2), ABUSE)

        # 2. a batched event: its data reaches the master as written, "id" included
        listing = {"host": H1, "ips": [IP1], "zones": {ZONE: {"ok": True, "why": "self-test passed"}},
                   "transitions": [{"ip": IP1, "zone": ZONE, "state": "listed", "previous": "clear",
                                    "codes": ["127.0.0.2"], "why": "x", "initial": False}]}
        batch = {"events": [{"tag": DNSBL, "id": H1, "data": listing}]}
        call(lab, "event.fire_master", "{}", "mailfleet/batch", f"preload={json.dumps(batch)}")

        # 5. holding a user of mail01's domain
        hold = {"host": H2, "offenders": [], "outbound": [
            {"user": "alice@example-a.test", "messages": 999, "recipients": 999, "window": 3600, "ips": []}]}
        call(lab, "mailfleet_signed.fire", json.dumps(hold), ABUSE)

        # 6. a scoped IPv6 address next to a plain one (its own report: it may ban, within its rate)
        scoped = {"host": H2, "offenders": [{"ip": "2001:db8::7%eth0", "rules": {"relay": 9}},
                                            {"ip": "198.19.60.7", "rules": {"relay": 9}}]}
        call(lab, "mailfleet_signed.fire", json.dumps(scoped), ABUSE)
        wait(lambda: all(_banned(lab, h, "198.19.60.7") for h in ("mail01", "mail02")), 30,
             "the plain address of the scoped report banned on every host")
        time.sleep(5)
        for h in ("mail01", "mail02"):
            assert not _banned(lab, h, "198.19.60.1") and not _banned(lab, h, "198.19.60.2"), h
        assert not {"198.19.60.1", "198.19.60.2"} & ledger_addresses()
        assert "2001:db8::7%eth0" not in ledger_addresses()
        assert lab.run("mail01", "postmap", "-q", "alice@example-a.test", "hash:/etc/postfix/mailfleet_sasl_hold",
                       check=False).stdout.strip() == ""
        rc, modes, raw = salt_run("mailfleet_reroute.status", timeout=120)
        assert rc == 0 and modes["hosts"].get(H1, {}).get("mode", "normal") == "normal", modes
        # the refusals were alerted, named for mail02 (sent or, within a minute, counted)
        wait(lambda: len(refused_alerts(H2)) - before >= 3, 60, "report_refused alerts naming mail02")

        # 3. foreign addresses in its grains, then a real listing of mail02
        fake_grain(lab, [IP2, FOREIGN])
        nsupdate(ZONE, ("replace", NAME[IP2], "A", "127.0.0.2"))
        # what mail01 does is what matters: it admits mail02's inventory address, nothing else
        wait(lambda: f"{IP2}/32" in postconf(lab, "mail01", "mynetworks").split(), REACT, "mail01 admitting mail02")
        admitted = postconf(lab, "mail01", "mynetworks").split()
        assert not [n for n in admitted if FOREIGN in n], admitted
        assert wait(lambda: alerts(webhook, "inventory_mismatch", H2), 60, "the inventory_mismatch alert")
        nsupdate(ZONE, ("delete", NAME[IP2], "A"))
        wait(lambda: f"{IP2}/32" not in postconf(lab, "mail01", "mynetworks").split(), REACT, "mail01 dropping mail02")

        # 4. 0.0.0.0/0 in its grains, then attacker probes mail01: mail01's genuine report bans it
        fake_grain(lab, [IP2, "0.0.0.0/0"])
        time.sleep(31)  # the never-ban list is rebuilt at most every 30 s: let it see the grain
        _unban(ATTACKER)
        wait(lambda: not any(_banned(lab, h, ATTACKER) for h in ("mail01", "mail02")), 30, "attacker unbanned")
        for _ in range(3):
            out = lab.run("attacker", "swaks", "--hide-informational", "--timeout", "20", "--server", IP1,
                          "--port", "25", "--ehlo", "attacker.lab.test", "--from", "x@attacker.lab.test",
                          "--to", "victim@elsewhere.test", check=False).stdout
            assert "Relay access denied" in out
        wait(lambda: all(_banned(lab, h, ATTACKER) for h in ("mail01", "mail02")), 30,
             "attacker banned on every host (mail01's own report)")
        assert not _reachable(lab, "attacker", IP1) and _reachable(lab, "outside", IP1)
    finally:
        call(lab, "grains.delkey", "ipv4", "force=True", check=False)
        call(lab, "saltutil.refresh_grains", check=False)
        call(lab, "saltutil.refresh_pillar", "wait=True", check=False)
        nsupdate(ZONE, ("delete", NAME[IP2], "A"))
        _unban(",".join(synthetic + [ATTACKER]))
    wait(lambda: postconf(lab, "mail02", "relayhost") == "", REACT, "mail02 direct again")
    mail01_is_itself(lab)
    print(f"compromised-host scenario: {time.time() - t0:.0f} s")
