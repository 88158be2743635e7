"""Alerts (_runners/mailfleet_alert.py): the throttle (per kind+subject and per kind, held-back
alerts counted into the next one, shared through sqlite across processes and restarts), the
settings, and the channels against real servers on loopback (an HTTP receiver, an SMTP
receiver). The master's event bus is the one channel replaced here (it needs a running
master; tests/lab/test_55_dnsbl.py sees the real one)."""
import http.server
import json
import socketserver
import threading

import pytest

import mailfleet_alert as al

T0 = 1_800_000_000.0


@pytest.fixture()
def th(tmp_path):
    t = al.Throttle(tmp_path / "ledger.sqlite", period=60, burst=1, kind_burst=10)
    yield t
    t.close()


def test_one_alert_per_kind_and_subject_per_minute(th):
    #        (seconds after T0, kind, subject)              -> sent?, held back before it
    steps = [((0, "dnsbl", "mail01 198.18.0.11"),            (True, 0)),
             ((1, "dnsbl", "mail01 198.18.0.11"),            (False, 0)),   # same minute: held
             ((30, "dnsbl", "mail01 198.18.0.11"),           (False, 0)),
             ((2, "dnsbl", "mail02 198.18.0.12"),            (True, 0)),    # other subject: own budget
             ((3, "cert", "mail01 198.18.0.11"),             (True, 0)),    # other kind: own budget
             ((60.5, "dnsbl", "mail01 198.18.0.11"),         (True, 2)),    # next minute: sent, 2 reported
             ((61, "dnsbl", "mail01 198.18.0.11"),           (False, 0)),
             ((200, "dnsbl", "mail01 198.18.0.11"),          (True, 1))]
    for (dt, kind, subject), (sent, held) in steps:
        go, h, _row = th.decide(kind, subject, "m", T0 + dt)
        assert (go, h if go else 0) == (sent, held), (dt, kind, subject)


def test_distinct_subjects_are_capped_per_kind(th):
    sent = [th.decide("ban_rate", f"host{i}", "m", T0 + i * 0.01)[0] for i in range(1000)]
    assert sum(sent) == 10 and sent[:10] == [True] * 10
    # another kind is not starved by the storm
    assert th.decide("dnsbl", "mail01", "m", T0 + 11)[0]
    # a minute later the kind has budget again
    assert th.decide("ban_rate", "host999", "m", T0 + 61)[0]


def test_throttle_survives_a_restart_and_is_shared(tmp_path):
    path = tmp_path / "ledger.sqlite"
    a = al.Throttle(path)
    assert a.decide("dnsbl", "x", "m", T0)[0]
    a.close()
    b, c = al.Throttle(path), al.Throttle(path)   # a restarted master; two processes
    assert not b.decide("dnsbl", "x", "m", T0 + 5)[0]
    assert not c.decide("dnsbl", "x", "m", T0 + 6)[0]
    assert [r["sent"] for r in c.recent(T0 - 1)] == [1, 0, 0]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    b.close()
    c.close()


def test_burst_setting(tmp_path):
    t = al.Throttle(tmp_path / "l.sqlite", period=10, burst=3, kind_burst=100)
    assert [t.decide("k", "s", "m", T0 + i)[0] for i in range(5)] == [True, True, True, False, False]
    assert t.decide("k", "s", "m", T0 + 10.5)[0]
    t.close()


@pytest.mark.parametrize("conf,key", [
    ({"period": 0}, "mailfleet_alert:period"),
    ({"burst": "1"}, "mailfleet_alert:burst"),
    ({"webhook": "ftp://x"}, "mailfleet_alert:webhook"),
    ({"webhook": 5}, "mailfleet_alert:webhook"),
    ({"mail": {"too": "x"}}, "mailfleet_alert:mail"),
    ({"hook": "http://x"}, "unknown mailfleet_alert setting"),
])
def test_settings_errors_name_the_key(conf, key):
    with pytest.raises(ValueError, match=key):
        al.settings(conf)


def test_file_settings_override_master_config():
    s = al.settings({"webhook": "http://a/", "period": 30}, {"webhook": "https://b/"})
    assert (s["webhook"], s["period"], s["burst"]) == ("https://b/", 30, 1)


@pytest.mark.parametrize("relay,expected", [
    (None, ("localhost", 25)), ("mx.example", ("mx.example", 25)), ("198.18.0.12:2525", ("198.18.0.12", 2525)),
    ("[2001:db8::1]", ("2001:db8::1", 25)), ("[2001:db8::1]:587", ("2001:db8::1", 587))])
def test_relay_address(relay, expected):
    assert al.relay_address(relay) == expected


# --- channels against real loopback servers --------------------------------------------------

class Hook(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.got.append((self.headers["Content-Type"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


class Smtp(socketserver.StreamRequestHandler):
    """Just enough SMTP to take one message (what a relay does)."""
    got = []

    def handle(self):
        w = self.wfile.write
        w(b"220 test ESMTP\r\n")
        rcpt, data = [], None
        while True:
            line = self.rfile.readline()
            if not line:
                return
            cmd = line.decode().strip()
            up = cmd.upper()
            if up.startswith(("EHLO", "HELO")):
                Smtp.helo = cmd.split(None, 1)[1]
                w(b"250 test\r\n")
            elif up.startswith("RCPT"):
                rcpt.append(cmd.split(":", 1)[1].strip(" <>"))
                w(b"250 ok\r\n")
            elif up == "DATA":
                w(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) != b".\r\n":
                    data += chunk
                Smtp.got.append((rcpt, data.decode()))
                w(b"250 queued\r\n")
            elif up == "QUIT":
                w(b"221 bye\r\n")
                return
            else:
                w(b"250 ok\r\n")


@pytest.fixture()
def servers():
    Hook.got, Smtp.got = [], []
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    smtp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Smtp)
    for s in (web, smtp):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield web.server_address[1], smtp.server_address[1]
    for s in (web, smtp):
        s.shutdown()
        s.server_close()


def test_send_reaches_webhook_mail_and_event_once_per_minute(servers, tmp_path, monkeypatch):
    web, smtp = servers
    conf = tmp_path / "mailfleet-alert.conf"
    conf.write_text(json.dumps({"mailfleet_alert": {
        "webhook": f"http://127.0.0.1:{web}/hook",
        "mail": {"to": "postmaster@example.test", "relay": f"127.0.0.1:{smtp}", "helo": "master.lab.test"}}}))
    events = []
    monkeypatch.setattr(al, "__opts__", {"id": "master", "cachedir": str(tmp_path), "conf_file": str(tmp_path / "master")},
                        raising=False)
    monkeypatch.setattr(al, "_fire", lambda tag, data: events.append((tag, data)))
    r1 = al.send("dnsbl", "mail01.lab.test 198.18.0.11", "listed on dnsbl.lab.test", {"zone": "dnsbl.lab.test"})
    r2 = al.send("dnsbl", "mail01.lab.test 198.18.0.11", "listed again")
    assert r1["channels"] == {"event": "sent", "webhook": "HTTP 204", "mail": "sent"}, r1
    assert r2 == {"suppressed": True, "kind": "dnsbl", "subject": "mail01.lab.test 198.18.0.11"}
    assert [t for t, _ in events] == ["mailfleet/alert/dnsbl"]
    assert len(Hook.got) == 1
    ctype, doc = Hook.got[0]
    assert ctype == "application/json"
    assert doc["id"] and (doc["kind"], doc["subject"], doc["details"]) == ("dnsbl", "mail01.lab.test 198.18.0.11", {"zone": "dnsbl.lab.test"})
    (rcpt, text), = Smtp.got
    assert rcpt == ["postmaster@example.test"] and Smtp.helo == "master.lab.test"
    assert "Subject: [mailfleet warning] dnsbl: mail01.lab.test 198.18.0.11" in text
    assert "Auto-Submitted: auto-generated" in text
    assert f"X-Mailfleet-Alert: dnsbl {doc['id']}" in text
    rows = al.recent()
    assert [r["sent"] for r in rows] == [1, 0]


def test_a_dead_webhook_does_not_stop_the_other_channels(servers, tmp_path, monkeypatch):
    _web, smtp = servers
    monkeypatch.setattr(al, "__opts__", {"id": "master", "cachedir": str(tmp_path), "conf_file": str(tmp_path / "master"),
                                         "mailfleet_alert": {"webhook": "http://127.0.0.1:9/none", "timeout": 2,
                                                             "mail": {"to": "pm@example.test", "relay": f"127.0.0.1:{smtp}"}}},
                        raising=False)
    monkeypatch.setattr(al, "_fire", lambda tag, data: None)
    r = al.send("queue", "mail02.lab.test", "deferred queue 5000")
    assert r["channels"]["webhook"].startswith("failed") and r["channels"]["mail"] == "sent"


def test_hostile_kind_and_long_subject_are_clipped(tmp_path, monkeypatch):
    monkeypatch.setattr(al, "__opts__", {"id": "m", "cachedir": str(tmp_path), "conf_file": str(tmp_path / "master")}, raising=False)
    events = []
    monkeypatch.setattr(al, "_fire", lambda tag, data: events.append(tag))
    r = al.send("dns/../bl\n*", "x" * 5000, "m")
    assert r["kind"] == "dnsbl" and len(r["subject"]) == al.MAX_FIELD
    assert events == ["mailfleet/alert/dnsbl"]


def test_one_reporter_flooding_a_kind_cannot_silence_alerts_about_another_host(tmp_path):
    t = al.Throttle(tmp_path / "ledger.sqlite", period=60, burst=1, kind_burst=10)
    for i in range(30):  # mail02 makes up subjects to exhaust the kind's budget
        t.decide("report_refused", f"mail02.lab.test #{i}", "x", 1000.0 + i / 100, reporter="mail02.lab.test")
    sent = [r for r in t.recent(0) if r["sent"]]
    assert len(sent) == 10
    go, _held, _row = t.decide("report_refused", "mail01.lab.test", "x", 1001.0, reporter="mail01.lab.test")
    assert go, "an alert about mail01 was silenced by mail02's flood"
    go, _held, _row = t.decide("report_refused", "mail02.lab.test #99", "x", 1001.0, reporter="mail02.lab.test")
    assert not go
    t.close()


def test_a_ledger_from_before_the_per_reporter_budget_keeps_its_alerts_and_gains_the_budget(tmp_path):
    import sqlite3
    path = tmp_path / "ledger.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""
    CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, subject TEXT NOT NULL,
        created REAL NOT NULL, sent INTEGER NOT NULL, suppressed INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL, channels TEXT);
    INSERT INTO alerts (kind, subject, created, sent, message) VALUES ('dnsbl', 'x', 1000.0, 1, 'old');
    """)
    old.commit()
    old.close()
    a, b = al.Throttle(path), al.Throttle(path)     # two reactor threads upgrade it at once
    assert not a.decide("dnsbl", "x", "m", 1010.0)[0], "the alert sent before the upgrade was forgotten"
    go, _held, _row = b.decide("report_refused", "mail01", "m", 1010.0, reporter="mail01")
    assert go
    assert [r["sent"] for r in b.recent(0)] == [1, 0, 1]
    a.close()
    b.close()
