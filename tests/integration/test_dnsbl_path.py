"""
The DNSBL reaction through real Salt daemons (pytest-salt-factories): one master, one minion.

    minion fires mailfleet/dnsbl/transition -> master reactor (reactor/dnsbl.sls)
      -> runner mailfleet_reroute.dnsbl -> ledger (dnsbl_listings, outbound) + alert
      -> state.sls on the minion, whose pillar mailfleet_outbound comes from the ledger through
         the mailfleet_bans ext_pillar

The minion is not a mail host, so the runner applies a probe SLS (``mailfleet_reroute:sls``)
that writes the pillar it was given to a file: what mail.dnsbl would render into main.cf.
A single-host fleet has no clean peer, so a listing means hold. The event is fired with
``salt-call event.fire_master``, so Salt sets the sending minion's id on it exactly as for the
engine's events.
"""
import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IP = "192.0.2.25"
TAG = "mailfleet/dnsbl/transition"


@pytest.fixture(scope="session")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("dnsbl-roots")
    out = base / "outbound.json"
    (base / "states" / "mftest").mkdir(parents=True)
    (base / "states" / "mftest" / "outbound.sls").write_text(
        "mftest-outbound:\n  file.managed:\n"
        f"    - name: {out}\n"
        "    - contents: {{ pillar.get('mailfleet_outbound', {}) | json | yaml_dquote }}\n")
    (base / "pillar").mkdir()
    (base / "pillar" / "top.sls").write_text("base:\n  '*':\n    - host\n")
    (base / "pillar" / "host.sls").write_text(f"mailfleet:\n  dnsbl:\n    ips: [{IP}]\n")
    return base, out


@pytest.fixture(scope="session")
def master(salt_factories, roots, tmp_path_factory):
    base, _out = roots
    ledger = tmp_path_factory.mktemp("dnsbl-ledger") / "ledger.sqlite"
    overrides = {
        "file_roots": {"base": [str(REPO / "salt"), str(base / "states")]},
        "pillar_roots": {"base": [str(base / "pillar")]},
        "module_dirs": [str(REPO / "salt")],
        "reactor": [{TAG: ["salt://reactor/dnsbl.sls"]}],
        "mailfleet_ledger": str(ledger),
        "mailfleet_reroute": {"sls": "mftest.outbound", "apply_timeout": 120},
        "ext_pillar": [{"mailfleet_bans": {}}],
        "log_level_logfile": "info",
    }
    factory = salt_factories.salt_master_daemon(f"mf-dnsbl-master-{uuid.uuid4().hex[:6]}", overrides=overrides)
    with factory.started(start_timeout=180):
        yield factory, ledger


@pytest.fixture(scope="session")
def minion(master):
    factory = master[0].salt_minion_daemon(f"mf-dnsbl-minion-{uuid.uuid4().hex[:6]}")
    with factory.started(start_timeout=180):
        cli = factory.salt_call_cli(timeout=120)
        assert cli.run("saltutil.sync_all").returncode == 0
        # the master's minion data cache must hold its grains and pillar (the runner reads them)
        assert cli.run("saltutil.refresh_pillar", wait=True).returncode == 0
        yield factory


def fire(minion, payload):
    # signed with the minion's own report key, as its detector signs (issue 13)
    ret = minion.salt_call_cli(timeout=60).run("mailfleet_signed.fire", json.dumps(payload), TAG)
    assert ret.returncode == 0 and ret.data is True, ret


def wait_for(pred, timeout=90.0, step=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(step)
    return pred()


def rows(ledger, sql):
    if not Path(ledger).exists():
        return []
    db = sqlite3.connect(ledger)
    try:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute(sql)]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def outbound(out):
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError):
        return None


def transition(host, state, ip=IP, zone="dnsbl.lab.test"):
    return {"host": host, "ips": [ip], "zones": {zone: {"ok": True, "why": "self-test passed"}},
            "transitions": [{"ip": ip, "zone": zone, "state": state, "previous": None,
                             "codes": ["127.0.0.2"] if state == "listed" else [], "why": "x", "initial": False}]}


def test_forged_and_foreign_events_change_nothing(master, minion, roots):
    _factory, ledger = master
    fire(minion, transition("mail99.example", "listed"))            # names another host
    fire(minion, transition(minion.id, "listed", ip="198.51.100.7"))  # not this host's address
    time.sleep(8)
    assert rows(ledger, "SELECT * FROM dnsbl_listings") == []
    assert not [r for r in rows(ledger, "SELECT * FROM outbound") if r["mode"] != "normal"]


def test_listed_holds_then_cleared_restores_with_alerts(master, minion, roots):
    _factory, ledger = master
    _base, out = roots
    fire(minion, transition(minion.id, "listed"))
    held = wait_for(lambda: (outbound(out) or {}).get("mode") == "hold" and outbound(out))
    assert held and held["queue_lifetime"] == "100d", outbound(out)
    (listing,) = rows(ledger, "SELECT * FROM dnsbl_listings")
    assert (listing["host"], listing["ip"], listing["zone"], listing["cleared"]) == (minion.id, IP, "dnsbl.lab.test", None)
    # the row is written before the channels are tried, and their outcome after: wait for both
    alert = wait_for(lambda: rows(ledger, "SELECT * FROM alerts WHERE kind='dnsbl_listed' AND channels IS NOT NULL"), 30)
    assert alert and json.loads(alert[0]["channels"])["event"] == "sent"
    # the same listing again (the engine restating it): nothing new, no second alert
    fire(minion, transition(minion.id, "listed"))
    time.sleep(5)
    assert len(rows(ledger, "SELECT * FROM dnsbl_listings")) == 1
    assert len(rows(ledger, "SELECT * FROM alerts WHERE kind='dnsbl_listed' AND sent=1")) == 1

    fire(minion, transition(minion.id, "cleared"))
    normal = wait_for(lambda: (outbound(out) or {}).get("mode") == "normal" and outbound(out))
    assert normal and normal["queue_lifetime"] == "100d"   # kept for the grace after a hold
    assert rows(ledger, "SELECT cleared FROM dnsbl_listings")[0]["cleared"]
    # the history row is written with the apply's result, just after the host converged
    def hist():
        return [r["action"] for r in rows(ledger, "SELECT action FROM outbound_history ORDER BY id")]
    assert wait_for(lambda: len(hist()) >= 2, 30) and hist() == ["hold", "normal"]
    assert wait_for(lambda: rows(ledger, "SELECT * FROM alerts WHERE kind='dnsbl_cleared'"), 30)
