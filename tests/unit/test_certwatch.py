"""Certificate watch and reaction, pure parts, with real certificates (made here with
`cryptography`) and real TLS listeners on loopback:

- mailfleet_certcheck: cert_info (serial, fingerprint, notAfter), days left, assess (expiring
  below the threshold, served differs from disk = stale, unreachable), the Tracker (changes and
  periodic repeats only), settings errors naming the pillar key, probe() over SMTP STARTTLS and
  implicit TLS against loopback servers serving a known certificate, the engine's Watcher.
- mailfleet_certs runner: event validation (forged host, foreign or hostile lineage names),
  the decision, the cooldown in the sqlite ledger (real file), the verdict after a re-probe,
  and the cert reactor rendered with hostile data."""
import datetime
import socket
import ssl
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import mailfleet_cert_policy as cert_policy_lib
import mailfleet_certs as rc
import mailfleet_certcheck as cw

sys.path.insert(0, str(Path(__file__).parent))
from test_reactor_render import HOSTILE, render

H1, H2 = "mail01.lab.test", "mail02.lab.test"
NOW = time.time()


def make_cert(tmp_path, name, days, serial=None):
    """A self-signed certificate for ``name`` valid ``days`` from now: (cert.pem, key.pem, serial)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    serial = serial or x509.random_serial_number()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj).public_key(key.public_key())
            .serial_number(serial).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    d = tmp_path / f"{name}-{serial:x}"
    d.mkdir(parents=True)
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem", serial


# --- cert_info, days left, assess ---------------------------------------------------------

def test_cert_info_reads_serial_fingerprint_and_expiry(tmp_path):
    pem, _, serial = make_cert(tmp_path, H1, 10)
    info = cw.cert_info(pem.read_bytes())
    hexed = format(serial, "X")
    assert info["serial"] == "0" * (len(hexed) % 2) + hexed          # as `openssl x509 -serial` prints it
    assert info["names"] == [H1]
    assert 9.9 < cw.days_left(info["not_after"], time.time()) <= 10.0
    der = x509.load_pem_x509_certificate(pem.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert cw.cert_info(der) == info                     # DER (what a TLS peer gives) = same facts


def test_assess_expiry_against_threshold(tmp_path):
    short = cw.cert_info(make_cert(tmp_path, H1, 20)[0].read_bytes())
    long = cw.cert_info(make_cert(tmp_path, H1, 60)[0].read_bytes())
    assert cw.assess(short, {}, 21, NOW) == ["expiring"]
    assert cw.assess(long, {}, 21, NOW) == []
    assert cw.assess(long, {}, 61, NOW) == ["expiring"]  # a threshold above the validity (the lab test)
    assert cw.assess({"error": "no file"}, {}, 21, NOW) == ["missing"]


def test_assess_served_differs_from_disk_is_stale(tmp_path):
    old = cw.cert_info(make_cert(tmp_path, H1, 25)[0].read_bytes())
    new = cw.cert_info(make_cert(tmp_path, H1, 90)[0].read_bytes())
    served = {25: new, 587: old, 993: old, 465: {"error": "ConnectionRefusedError"}}
    # renewed on disk, 587 and 993 still serve the old one: stale there, not expiring (disk is fine)
    assert cw.assess(new, served, 21, NOW) == ["stale:587", "stale:993", "unreachable:465"]
    assert cw.assess(new, {25: new, 587: new, 993: new}, 21, NOW) == []


def test_tracker_reports_changes_and_repeats_never_every_round():
    t = cw.Tracker(repeat=100)
    assert t.update("a", [], 0) is None                  # healthy at start: nothing said
    assert t.update("a", ["expiring"], 1) == "new"
    assert [t.update("a", ["expiring"], s) for s in range(2, 100)] == [None] * 98
    assert t.update("a", ["expiring"], 101) == "repeat"
    assert t.update("a", ["expiring", "stale:587"], 102) == "changed"
    assert t.update("a", [], 103) == "resolved"
    assert t.update("a", [], 500) is None
    t2 = cw.Tracker(repeat=100)
    assert t2.update("a", ["stale:993"], 0) == "new"     # a problem at start is reported
    t2.forget("a")                                       # ... but the event was lost: again next round
    assert t2.update("a", ["stale:993"], 1) == "new"


def test_watcher_reports_again_when_the_event_did_not_reach_the_master():
    conf = cw.settings({"interval": 1, "repeat": 3600}, H1)
    check = lambda conf, name, now: {"name": name, "problems": ["expiring"], "disk": {}, "served": {}}
    w = cw.Watcher(H1, conf, check)
    fired = []
    stop = threading.Event()

    def fire(ev, tag):
        fired.append((tag, ev["lineages"][0]["report"]))
        if len(fired) == 1:
            return False                                  # the minion was not connected yet
        stop.set()
        return True

    w.run(fire, stop, start_delay=0)
    assert fired == [("mailfleet/cert/problem", "new"), ("mailfleet/cert/problem", "new")]


def test_settings_errors_name_the_pillar_key():
    s = cw.settings({"ports": {"25": "starttls", "993": "tls"}}, H1)
    assert s["ports"] == {25: "starttls", 993: "tls"} and s["lineages"] == [H1] and s["threshold_days"] == 21
    for conf, key in [({"threshold_days": "x"}, "cert_threshold_days"), ({"interval": 0}, "cert_interval"),
                      ({"ports": {"25": "imap"}}, "cert_ports"), ({"lineages": ["../etc"]}, "cert_lineages"),
                      ({"live_dir": "relative"}, "cert_live_dir")]:
        with pytest.raises(ValueError, match=f"mailfleet:defense:{key}"):
            cw.settings(conf, H1)


# --- probes against real loopback TLS servers ------------------------------------------------

class Server:
    """A loopback server: SMTP with STARTTLS, or implicit TLS, serving ``cert``."""

    def __init__(self, cert, key, mode):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(5)
                if self.mode == "starttls":
                    f = conn.makefile("rb")
                    conn.sendall(b"220 test ESMTP\r\n")
                    f.readline()
                    conn.sendall(b"250-test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                    f.readline()
                    conn.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                tls = self.ctx.wrap_socket(conn, server_side=True)
                try:
                    tls.recv(100)
                except OSError:
                    pass
                tls.close()
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self):
        self.sock.close()


def test_probe_reads_what_starttls_and_implicit_tls_serve(tmp_path):
    pem, key, serial = make_cert(tmp_path, H1, 30)
    servers = [Server(pem, key, "starttls"), Server(pem, key, "tls")]
    try:
        for s in servers:
            got = cw.probe("127.0.0.1", s.port, s.mode, H1, timeout=5)
            assert int(got.get("serial"), 16) == serial, got
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        closed.close()
        assert "error" in cw.probe("127.0.0.1", port, "tls", H1, timeout=2)
    finally:
        for s in servers:
            s.close()


def test_engine_watcher_reports_renewed_but_not_reloaded_once(tmp_path):
    """Disk renewed, port still serving the old certificate: one 'new' report, then quiet."""
    old_pem, old_key, _ = make_cert(tmp_path, H1, 30)
    live = tmp_path / "live"
    (live / H1).mkdir(parents=True)
    (live / H1 / "cert.pem").write_bytes(old_pem.read_bytes())
    srv = Server(old_pem, old_key, "tls")
    try:
        conf = cw.settings({"live_dir": str(live), "ports": {srv.port: "tls"}, "interval": 1, "repeat": 3600,
                            "timeout": 5}, H1)
        w = cw.Watcher(H1, conf)
        assert w.round() is None                             # same cert on disk and served
        new_pem, _, new_serial = make_cert(tmp_path, H1, 90)
        (live / H1 / "cert.pem").write_bytes(new_pem.read_bytes())
        ev = w.round()
        (lin,) = ev["lineages"]
        assert ev["host"] == H1 and lin["problems"] == [f"stale:{srv.port}"] and lin["report"] == "new"
        assert int(lin["disk"]["serial"], 16) == new_serial
        assert lin["served"][str(srv.port)]["serial"] != lin["disk"]["serial"]
        assert w.round() is None                             # not again until `repeat`
    finally:
        srv.close()


# --- runner: validation, decision, cooldown --------------------------------------------------

def event(host=H1, name=H1, problems=("expiring",), serial="2C1BCBB58C5C9BA2"):
    return {"host": host, "threshold_days": 21,
            "lineages": [{"name": name, "problems": list(problems), "report": "new", "disk": {"serial": serial}}]}


def test_valid_event():
    ev = event(problems=["stale:587", "expiring"])
    ev["lineages"][0]["served"] = {"25": {"serial": "2C1BCBB58C5C9BA2"}, "587": {"serial": "0D5BDF6AF08D07B6"},
                                   "993": {"error": "timeout"}, "465": {"serial": "x; rm"}}
    (it,) = cert_policy_lib.check_event(ev, H1, [H1])
    assert it == {"name": H1, "problems": ["expiring", "stale:587"], "disk_serial": "2C1BCBB58C5C9BA2",
                  "served_serials": ["0D5BDF6AF08D07B6"], "report": "new"}


def test_forged_host_and_foreign_lineage_are_refused():
    with pytest.raises(cert_policy_lib.Refused, match="names host 'mail02.lab.test' but was sent by 'mail01.lab.test'"):
        cert_policy_lib.check_event(event(host=H2, name=H2), H1, [H1])
    with pytest.raises(cert_policy_lib.Refused, match="not one of mail01.lab.test's"):
        cert_policy_lib.check_event(event(name=H2), H1, [H1])             # another host's lineage, from mail01


@pytest.mark.parametrize("bad", HOSTILE + ["../../etc", "-rf", "a b", "x" * 300, "UPPER.test", 7])
def test_hostile_lineage_names_are_refused(bad):
    with pytest.raises(cert_policy_lib.Refused):
        cert_policy_lib.check_event(event(name=bad), H1, [H1, bad])


@pytest.mark.parametrize("probs", [["rm -rf"], ["stale:587; x"], "expiring", [1], ["x"] * 40])
def test_bad_problems_are_refused(probs):
    with pytest.raises(cert_policy_lib.Refused):
        cert_policy_lib.check_event(event(problems=probs), H1, [H1])


def test_decide():
    assert cert_policy_lib.decide(["expiring"]) == "renew"
    assert cert_policy_lib.decide(["expiring", "stale:587"]) == "renew"
    assert cert_policy_lib.decide(["missing"]) == "renew"
    assert cert_policy_lib.decide(["stale:993"]) == "reload"
    assert cert_policy_lib.decide(["unreachable:25"]) is None
    assert cert_policy_lib.decide([]) is None


def test_cooldown_in_the_ledger_one_attempt_per_lineage_and_action(tmp_path):
    path = tmp_path / "ledger.sqlite"
    led = rc.Ledger(path)
    rid = led.claim(H1, H1, "renew", "expiring", H1, 1000.0, "AA", cooldown=3600)
    assert rid is not None
    assert led.claim(H1, H1, "renew", "expiring", H1, 1500.0, "AA", cooldown=3600) is None   # within cooldown
    assert led.claim(H1, H1, "reload", "stale:587", H1, 1500.0, "AA", cooldown=3600) is not None  # other action
    assert led.claim(H2, H2, "renew", "expiring", H2, 1500.0, "BB", cooldown=3600) is not None    # other host
    led.finish(rid, True, "BB", "serial BB served")
    led.close()
    led = rc.Ledger(path)                                   # survives reopening (a master restart)
    assert led.claim(H1, H1, "renew", "expiring", H1, 2000.0, "AA", cooldown=3600) is None
    assert led.claim(H1, H1, "renew", "expiring", H1, 4600.0, "AA", cooldown=3600) is not None  # cooldown over
    row = [r for r in led.rows() if r["id"] == rid][0]
    assert (row["ok"], row["old_serial"], row["new_serial"], row["reporter"]) == (1, "AA", "BB", H1)
    assert led.clear(H1, H1) == 3
    assert led.claim(H1, H1, "renew", "expiring", H1, 4700.0, "AA", cooldown=3600) is not None  # postmaster cleared
    led.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_verdict_after_reprobe():
    good = {"problems": [], "disk": {"serial": "BB", "days_left": 89.9}, "served": {}}
    assert cert_policy_lib.verdict("renew", "AA", good, 21)[0] is True
    assert cert_policy_lib.verdict("renew", "BB", good, 21) == (False, "serial unchanged (BB): not renewed")
    stale = dict(good, problems=["stale:587"])
    assert cert_policy_lib.verdict("renew", "AA", stale, 21) == (False, "still served the old certificate on 587")
    assert cert_policy_lib.verdict("reload", "BB", good, 21)[0] is True
    ok, why = cert_policy_lib.verdict("renew", "AA", dict(good, problems=["expiring"]), 5000)
    assert ok and "< threshold 5000" in why               # renewed and served; the lab's threshold is above validity
    assert cert_policy_lib.verdict("renew", "AA", {"problems": ["missing"], "disk": {"error": "x"}}, 21)[0] is False


def test_host_lineages_from_pillar():
    assert rc.host_lineages(H1, {"mailfleet": {}}) == [H1]
    assert rc.host_lineages(H1, {"mailfleet": {"host": {"myhostname": "mx.example.net"},
                                               "defense": {"cert_lineages": ["imap.example.net"]}}}) == [
        "mx.example.net", "imap.example.net"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_cert_reaction_passes_hostile_text_as_data(bad):
    data = {"id": bad, "data": {"host": bad, "lineages": [{"name": bad, "problems": [bad]}]}}
    high = render("cert.sls", data, tag="mailfleet/cert/problem")
    assert list(high) == ["mailfleet_cert_problem"]
    (fun, args), = high["mailfleet_cert_problem"].items()
    assert fun == "runner.mailfleet_certs.problem"
    assert {k: v for d in args[0]["args"] for k, v in d.items()} == {"minion": bad, "payload": data["data"]}


# --- mail.defense hands the pillar to the engine (rendered through Salt, nothing runs) -------

def _render_defense(tmp_path, defense):
    """The settings mail.defense hands the detector (the mailfleet-watch-settings state)."""
    import salt.loader
    from salt_render import DEBIAN_GRAINS, SaltRender
    r = SaltRender(tmp_path, grains=DEBIAN_GRAINS, pillar={"mailfleet": {"defense": defense}})
    r.salt["saltutil.sync_modules"]()                     # our modules, as a minion has them
    r.salt = salt.loader.minion_mods(r.opts, utils=r.utils)
    high = r.show_sls("mail.defense")
    (args,) = [a for sid, mod, fun, a in r.chunks(high) if sid == "mailfleet-watch-settings"]
    return args["settings"]


def test_defense_sls_writes_the_certificate_settings_for_the_engine(tmp_path):
    settings = _render_defense(tmp_path / "a", {"cert_threshold_days": 30, "cert_interval": 600})
    assert settings["certs"] == {
        "interval": 600, "lineages": ["mail01.lab.test"], "live_dir": "/etc/letsencrypt/live", "threshold_days": 30}
    assert _render_defense(tmp_path / "b", {"cert_watch": False})["certs"] is None


def test_defense_sls_refuses_bad_certificate_pillar_naming_the_key(tmp_path):
    with pytest.raises(AssertionError, match="mailfleet:defense:cert_ports"):
        _render_defense(tmp_path, {"cert_ports": {"25": "imap"}})
