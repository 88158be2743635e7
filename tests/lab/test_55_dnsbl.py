"""DNSBL listing answered across the fleet (issue 6), for real: mail01's address is listed in
the lab's DNSBL zone (dnsbl.lab.test on the lab BIND, a TSIG update: what the DNSBL operator
does). mail01's mailfleet_watch engine sees it through its resolver, the master's dnsbl
reactor hands the event to the mailfleet_reroute runner, which makes mail02 admit mail01 and
mail01 relay through mail02; a webhook receiver on the lab bridge (198.18.0.1, a thread of
this test) and the postmaster's mailbox get the alert. Then mail02 is listed too: no clean
peer is left, so both hosts hold (retry transport: deferred, even through a flush) their outbound mail with the queue lifetime
extended. Delisting both restores direct delivery; every message submitted meanwhile is
delivered and no bounce (DSN) is generated.

The listings, the alert settings file and the outbound modes are undone in `finally` blocks
(later tests share the lab)."""
import http.server
import json
import threading
import time

import pytest

from conftest import salt_run
from mailtools import PASSWORDS, log_lines, maildir_files_with, swaks, tag, wait, wait_for_mail
from mflab import config, fleet
from test_40_deliverability import nsupdate

H1, H2 = "mail01.lab.test", "mail02.lab.test"
IP1, IP2 = "198.18.0.11", "198.18.0.12"
ZONE = "dnsbl.lab.test"
NAME = {IP1: "11.0.18.198.dnsbl.lab.test.", IP2: "12.0.18.198.dnsbl.lab.test."}
TAG = "mailfleet/dnsbl/transition"
REACT = 180  # seconds: detection (3 s rounds) + reactor + up to three state.sls runs



def postconf(lab, host, key):
    return lab.run(host, "postconf", "-h", key).stdout.strip()


def _master_log_has(needle, since):
    log = fleet.SALT_DIR / "master.log"
    with open(log, "rb") as fh:
        fh.seek(since)
        return needle.encode() in fh.read()



@pytest.fixture(scope="module")
def reactor_live(lab, published):
    """The running master must map mailfleet/dnsbl/transition to reactor/dnsbl.sls."""
    log = fleet.SALT_DIR / "master.log"
    since = log.stat().st_size
    lab.salt(H1, "mailfleet_signed.fire", json.dumps({"host": H1, "transitions": []}), TAG, timeout=60)
    try:
        wait(lambda: _master_log_has(f"mailfleet_reroute: DNSBL event from {H1}", since), 20, "the reactor")
        yield None
        return
    except AssertionError:
        pytest.fail("the reactor stayed silent for 20 s: broken, or the lab master was started before the dnsbl reactor was configured "
                    "(config/master.d/mailfleet.conf is read at master start): restart the lab")


class _Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.got.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    """A JSON webhook receiver on the lab bridge, and the master's alert settings pointing at it
    (and mailing alice@example-a.test, the lab's postmaster, through mail01)."""
    srv = http.server.ThreadingHTTPServer((config.MASTER_IP, 0), _Hook)
    srv.got = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    conf = fleet.SALT_DIR / "mailfleet-alert.conf"
    conf.write_text(json.dumps({"mailfleet_alert": {
        "webhook": f"http://{config.MASTER_IP}:{srv.server_address[1]}/mailfleet",
        "mail": {"to": "alice@example-a.test", "relay": f"{IP1}:25", "helo": "master.lab.test",
                 "from": "mailfleet@master.lab.test"}}}))
    try:
        yield srv.got
    finally:
        conf.unlink(missing_ok=True)
        srv.shutdown()
        srv.server_close()
        thread.join(10)


def submit(lab, subject):
    """alice submits on mail01:587 (outside, TLS + AUTH) to bob on mail02."""
    proc = swaks(lab, "outside", "--server", H1, "--port", "587", "--tls", "--auth", "PLAIN",
                 "--auth-user", "alice@example-a.test", "--auth-password", PASSWORDS["alice@example-a.test"],
                 "--from", "alice@example-a.test", "--to", "bob@example-b.test",
                 "--header", f"Subject: {subject}", "--header", f"Message-ID: <{subject}@example-a.test>")
    assert "250 2.0.0 Ok: queued" in proc.stdout, proc.stdout[-1500:]
    return proc.stdout.split("250 2.0.0 Ok: queued as ")[1].split()[0]


def relay_allowed_from_mail01(lab):
    """Does mail02 let mail01 relay to a third domain? (RCPT only: nothing is queued.)"""
    proc = swaks(lab, "mail01", "--server", IP2, "--from", "alice@example-a.test",
                 "--to", "someone@elsewhere.test", "--helo", H1, "--quit-after", "RCPT", check=False)
    return "Relay access denied" not in proc.stdout and "250 2.1.5 Ok" in proc.stdout


def modes():
    code, ret, out = salt_run("mailfleet_reroute.status", timeout=120)
    assert code == 0, out[-2000:]
    return {h: v["mode"] for h, v in ret["hosts"].items()}


def alerts(got, kind, subject):
    return [a for a in got if a["kind"] == kind and a["subject"] == subject]


def test_listing_reroutes_then_holds_then_restores_without_losing_mail(lab, reactor_live, webhook):
    assert postconf(lab, "mail01", "relayhost") == "" and postconf(lab, "mail01", "default_transport") == "smtp"
    assert not relay_allowed_from_mail01(lab)
    sent = []
    try:
        # 1. mail01 listed: it relays through mail02, which admits it first.
        nsupdate(ZONE, ("replace", NAME[IP1], "A", "127.0.0.2"))
        wait(lambda: postconf(lab, "mail01", "relayhost") == f"[{IP2}]:25", REACT, "mail01 relaying through mail02")
        assert f"{IP1}/32" in postconf(lab, "mail02", "mynetworks").split()
        assert relay_allowed_from_mail01(lab)
        listed = wait(lambda: alerts(webhook, "dnsbl_listed", f"{H1} {IP1} {ZONE}"), 30, "the webhook alert")
        assert listed[0]["details"]["mode"] == "relay" and listed[0]["details"]["peer"] == H2
        assert listed[0]["details"]["codes"] == ["127.0.0.2"] and listed[0]["severity"] == "critical"
        assert modes()[H1] == "relay"
        # what the postmaster sees on the host itself
        seen = lab.salt(H1, "mailfleet_dnsbl.check", timeout=60)[H1]
        assert seen["zones"][ZONE]["ok"] and seen["verdicts"][f"{IP1} {ZONE}"]["state"] == "listed", seen
        relayed = tag("dnsbl-relay")
        qid = submit(lab, relayed)
        sent.append(relayed)
        line = wait(lambda: [l for l in log_lines(lab, "mail01", f"{qid}:") if "status=sent" in l], 60, "relayed delivery")
        assert f"relay={IP2}[{IP2}]:25" in line[0], line      # the relayhost, not mail02's MX name
        assert wait_for_mail(lab, "bob@example-b.test", relayed)
        # the postmaster's mailbox got the same alert (its id in a header)
        assert wait(lambda: maildir_files_with(lab, "alice@example-a.test",
                                               f"X-Mailfleet-Alert: dnsbl_listed {listed[0]['id']}"), 60,
                    "the alert mail to the postmaster")

        # 2. mail02 listed as well: no clean peer, both hold; nothing bounces.
        nsupdate(ZONE, ("replace", NAME[IP2], "A", "127.0.0.2"))
        wait(lambda: postconf(lab, "mail01", "default_transport").startswith("retry:4.7.1")
             and postconf(lab, "mail01", "relayhost") == "", REACT, "mail01 held")
        wait(lambda: postconf(lab, "mail02", "default_transport").startswith("retry:4.7.1"), REACT, "mail02 held")
        for host in ("mail01", "mail02"):
            assert postconf(lab, host, "maximal_queue_lifetime") == "100d"
            assert postconf(lab, host, "bounce_queue_lifetime") == "100d"
        wait(lambda: f"{IP1}/32" not in postconf(lab, "mail02", "mynetworks").split(), REACT, "mail02 dropping mail01")
        assert not relay_allowed_from_mail01(lab)
        assert modes() == {H1: "hold", H2: "hold"}
        held = [tag("dnsbl-held"), tag("dnsbl-held")]
        held_ids = [submit(lab, s) for s in held]
        sent += held
        lab.run("mail01", "postqueue", "-f")  # what an impatient admin types: it stays held
        for q in held_ids:
            wait(lambda q=q: [l for l in log_lines(lab, "mail01", f"{q}:") if "status=deferred" in l], 60,
                 f"{q} deferred")
        time.sleep(3)
        for q in held_ids:
            assert not [l for l in log_lines(lab, "mail01", f"{q}:") if "status=sent" in l or "status=bounced" in l]
        assert not maildir_files_with(lab, "bob@example-b.test", held[0])

        # 3. both delisted: direct delivery again, the held mail leaves, mail02 admits no one.
        nsupdate(ZONE, ("delete", NAME[IP1], "A"), ("delete", NAME[IP2], "A"))
        wait(lambda: postconf(lab, "mail01", "default_transport") == "smtp" and postconf(lab, "mail01", "relayhost") == "",
             REACT, "mail01 restored")
        wait(lambda: postconf(lab, "mail02", "default_transport") == "smtp", REACT, "mail02 restored")
        for q in held_ids:
            line = wait(lambda q=q: [l for l in log_lines(lab, "mail01", f"{q}:") if "status=sent" in l], 120,
                        f"{q} delivered after the release")
            # direct, or through mail02 as relayhost when mail02's delisting was handled first
            assert f"relay=mail02.lab.test[{IP2}]:25" in line[0] or f"relay={IP2}[{IP2}]:25" in line[0], line
        for s in sent:
            assert wait_for_mail(lab, "bob@example-b.test", s), s
        assert wait(lambda: alerts(webhook, "dnsbl_cleared", f"{H1} {IP1} {ZONE}"), 60, "the cleared alert")
        wait(lambda: modes() == {H1: "normal", H2: "normal"}, REACT, "both hosts normal in the ledger")
    finally:
        nsupdate(ZONE, ("delete", NAME[IP1], "A"), ("delete", NAME[IP2], "A"))
        try:
            wait(lambda: postconf(lab, "mail01", "relayhost") == "" and postconf(lab, "mail01", "default_transport") == "smtp"
                 and postconf(lab, "mail02", "default_transport") == "smtp", REACT, "both hosts back to direct delivery")
        except AssertionError:
            for h in (H1, H2):  # the postmaster's override: close the listings, converge
                salt_run("mailfleet_reroute.set_mode", h, "mode=normal", timeout=600)
            lab.run("mail01", "postqueue", "-f")
    # No bounce anywhere: no DSN to alice, no bounced status for these messages.
    for host in ("mail01", "mail02"):
        bounced = [l for l in log_lines(lab, host, "status=bounced") if any(s in l for s in sent)]
        assert not bounced, bounced
    for s in sent:
        for host in ("mail01", "mail02"):
            for qline in log_lines(lab, host, f"<{s}@example-a.test>"):
                qid = qline.split(": message-id=")[0].split()[-1]
                lines = log_lines(lab, host, f"{qid}:")
                assert not [l for l in lines if "status=bounced" in l or "sender non-delivery notification" in l], lines
    for s in sent:  # a DSN would quote the message's Message-ID back to alice
        assert not maildir_files_with(lab, "alice@example-a.test", f"{s}@example-a.test"), s
    assert not relay_allowed_from_mail01(lab)
