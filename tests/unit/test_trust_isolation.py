"""Isolating a compromised host (issue 13): `salt-run mailfleet_trust.isolate mail02`.

Real key store and ledger files; the Salt calls that need a master (the wheel client for
minion keys, the per-host state runs of the outbound plan) are recorders, and the lab test
of the DNSBL path (tests/lab/test_55_dnsbl.py) runs the real applies."""
import pytest

import mailfleet_bans as ext
import mailfleet_report as rep
import mailfleet_reroute as ob
import mailfleet_trust as trust
from signing import signed

H1, H2 = "mail01.lab.test", "mail02.lab.test"
TAG = "mailfleet/abuse/report"


@pytest.fixture
def master(tmp_path, monkeypatch):
    opts = {"mailfleet_ledger": str(tmp_path / "ledger.sqlite"), "cachedir": str(tmp_path)}
    calls, alerts = [], []
    for mod in (trust, ob, ext):
        monkeypatch.setattr(mod, "__opts__", opts, raising=False)
    monkeypatch.setattr(trust, "_wheel", lambda fun, host, **kw: calls.append((fun, host, kw)) or {"ok": True})
    monkeypatch.setattr(trust, "__salt__", {"mailfleet_reroute.reconcile": lambda: calls.append(("reconcile",))
                                            or {"steps": []},
                                            "mailfleet_defense.forget_reporter": lambda host, unban=False:
                                            calls.append(("forget", host, unban)) or {"dropped": 0, "lifted": 0}},
                        raising=False)
    monkeypatch.setattr(trust, "_alert", lambda kind, subject, message, details=None, severity="warning":
                        alerts.append((kind, subject, severity)))
    return {"opts": opts, "calls": calls, "alerts": alerts}


def test_after_isolation_mail02s_reports_are_refused_and_its_key_is_rejected(master):
    opts = master["opts"]
    report = {"host": H2, "offenders": []}
    rep.check(opts, opts["mailfleet_ledger"], TAG, signed(opts, TAG, report))  # accepted before
    old = signed(opts, TAG, report)
    ret = trust.isolate(H2, reason="rootkit")
    assert ret["report_key"] == "revoked"
    with pytest.raises(rep.Refused, match="no valid key"):
        rep.check(opts, opts["mailfleet_ledger"], TAG, old)
    assert ("key.reject", H2, {"include_accepted": True}) in master["calls"] and ("reconcile",) in master["calls"]
    assert ("forget", H2, False) in master["calls"]  # its queued bans dropped (tests/unit/test_defense_runner.py)
    assert ("host_isolated", H2, "critical") in master["alerts"]
    assert H2 in trust.isolated() and H1 not in trust.isolated()
    # its pillar no longer carries a key; mail01's does
    assert ext.ext_pillar(H2, {})["mailfleet_report_key"] is None
    assert ext.ext_pillar(H1, {})["mailfleet_report_key"]["key"]


def test_a_restored_host_reports_again_with_a_new_key(master):
    opts = master["opts"]
    before = rep.KeyStore(rep.key_dir(opts, opts["mailfleet_ledger"])).ensure(H2)
    trust.isolate(H2)
    trust.restore(H2)
    after = ext.ext_pillar(H2, {})["mailfleet_report_key"]
    assert after["kid"] != before["kid"]
    host, _ = rep.check(opts, opts["mailfleet_ledger"], TAG, signed(opts, TAG, {"host": H2, "offenders": []}))
    assert host == H2 and ("key.accept", H2, {"include_rejected": True}) in master["calls"]
    assert trust.isolated() == {}


def test_mail01_no_longer_admits_an_isolated_mail02_and_does_not_relay_through_it(master, monkeypatch):
    """mail02 relayed through mail01 (listed); mail01 is listed next and would relay through
    mail02. After isolation: mail01 withdraws mail02's admission, mail02 is no one's peer."""
    applied = []
    monkeypatch.setattr(ob, "_apply", lambda host, conf, outbound=None: applied.append(host) or (True, "ok"))
    inv = {"mailfleet": {"inventory": {H1: {"addresses": ["198.18.0.11"]}, H2: {"addresses": ["198.18.0.12"]}}}}
    fleet = {H1: ({"ipv4": ["198.18.0.11"]}, inv), H2: ({"ipv4": ["198.18.0.12"]}, inv)}
    st = ob.Store(master["opts"]["mailfleet_ledger"])
    listed = {"ip": "198.18.0.12", "zone": "dnsbl.lab.test", "state": "listed", "codes": ["127.0.0.2"], "why": "x"}
    st.record(H2, listed, 1000.0)
    ob._converge(st, fleet, ob._conf(), "test", 1000.0)
    assert st.current()[H2] == ("relay", H1)
    assert {r["host"]: r["admit_peer"] for r in st.rows()}[H2] == H1
    trust.isolate(H2)
    applied.clear()
    ob._converge(st, fleet, ob._conf(), "isolated", 1001.0)
    assert {r["host"]: r["admit_peer"] for r in st.rows()}.get(H2) is None
    assert st.current()[H2][0] != "relay" and H1 in applied
    st.record(H1, dict(listed, ip="198.18.0.11"), 1002.0)
    ob._converge(st, fleet, ob._conf(), "mail01 listed", 1002.0)
    assert st.current()[H1] == ("hold", None)  # not through the isolated mail02
    st.close()
