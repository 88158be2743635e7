"""Issue 5 pieces without the lab: the MTA-STS policy a host serves (same text, same id as
the runner publishes), the FCrDNS verdict and the outbound hold table/state, and bad input
that must stop publishing (an unreadable DKIM state names the master setting)."""
import json
from pathlib import Path

import pytest

import mailfleet_records as R
import mailfleet_fcrdns_verdict as F
import mailfleet_outbound as S

ROOT = Path(__file__).resolve().parents[2]
HOSTS = {"mail01.lab.test": {"ipv4": ["198.18.0.11"]}, "mail02.lab.test": {"ipv4": ["198.18.0.12"]}}


# ---------------------------------------------------------------- MTA-STS

def test_host_policy_is_the_text_the_runner_hashes_into_the_id():
    data = {"hosts": ["mail01.lab.test", "mail02.lab.test"],
            "dns": {"mta_sts": {"mode": "testing", "max_age": 86400}}}
    built = R.build("example-a.test", data, HOSTS)
    served = R.mta_sts_policy("example-a.test", data)
    assert served["problems"] == []
    assert served["policy"] == built["files"]["mta-sts.txt"]
    (rdata,) = built["rrsets"][("_mta-sts.example-a.test.", "TXT")]
    assert R.txt_value(rdata) == served["record"] == f"v=STSv1; id={R.sts_id(served['policy'])}"
    assert served["policy"].split("\r\n")[:4] == [
        "version: STSv1", "mode: testing", "mx: mail01.lab.test", "mx: mail02.lab.test"]


def test_host_policy_errors_name_the_pillar_key_and_serve_nothing():
    for cfg, key in (({"mode": "strict"}, "mode"), ({"mode": "enforce", "max_age": 0}, "max_age"),
                     ({"mode": "enforce", "mx": ["mx.other.test"]}, "mx")):
        res = R.mta_sts_policy("example-a.test", {"hosts": ["mail01.lab.test"],
                                                  "dns": {"mta_sts": cfg}})
        assert res["policy"] is None
        assert any(p.startswith(f"mailfleet:domains:example-a.test:dns:mta_sts:{key}")
                   for p in res["problems"]), res["problems"]
    assert R.mta_sts_policy("example-a.test", {"hosts": ["mail01.lab.test"]}) == \
        {"policy": None, "record": None, "problems": []}


# ---------------------------------------------------------------- FCrDNS

def test_fcrdns_verdicts():
    name = "mail01.lab.test"
    assert F.evaluate(name, "198.18.0.11", ["mail01.lab.test."], ["198.18.0.11"])[0] is True
    ok, why = F.evaluate(name, "198.18.0.11", ["mail99.lab.test."], None)
    assert ok is False and "mail99.lab.test" in why and "want mail01.lab.test" in why
    assert F.evaluate(name, "198.18.0.11", [], None)[0] is False          # no PTR at all
    ok, why = F.evaluate(name, "198.18.0.11", ["MAIL01.lab.test"], ["198.18.0.99"])
    assert ok is False and "not forward-confirmed" in why
    assert F.evaluate(name, "198.18.0.11", None, None)[0] is None          # lookup failed
    assert F.evaluate(name, "198.18.0.11", [name], None)[0] is None
    assert F.verdict({"a": (True, ""), "b": (None, "")}) is None
    assert F.verdict({"a": (False, ""), "b": (None, "")}) is False
    assert F.verdict({}) is False
    assert F.usable_addresses(["127.0.0.1", "169.254.1.2", "fe80::1", "::1", "198.18.0.11",
                               "2001:db8::11"]) == ["198.18.0.11", "2001:db8::11"]


def test_hold_table_is_a_postfix_regexp_table_that_defers():
    reason = F.hold_reason("mail01.lab.test.", {"198.18.0.11": (False, "198.18.0.11: PTR x\ny")})
    held = F.hold_table(reason)
    assert F.table_holds(held) and not F.table_holds(F.hold_table(None))
    (rule,) = [l for l in held.splitlines() if not l.startswith("#")]
    assert rule.startswith("/^/ retry:4.7.1 outbound mail held by mailfleet: FCrDNS of "
                           "mail01.lab.test fails")
    assert "\n" not in reason
    # Postfix reads it for real in tests/lab/test_43_ptr_hold.py (postmap is not installed here).


class _Salt(dict):
    def __init__(self, result):
        super().__init__()
        self["mailfleet_fcrdns.hold_table"] = F.hold_table
        self["mailfleet_fcrdns.check"] = lambda **kw: result


def _state(monkeypatch, result, test=False):
    monkeypatch.setattr(S, "__salt__", _Salt(result), raising=False)
    monkeypatch.setattr(S, "__opts__", {"test": test}, raising=False)
    return S.held_while_fcrdns_fails


BAD = {"ok": False, "name": "mail01.lab.test", "reason": "held: PTR mail99",
       "addresses": {"198.18.0.11": {"ok": False, "detail": "PTR mail99.lab.test"}}}
GOOD = {"ok": True, "name": "mail01.lab.test", "reason": None,
        "addresses": {"198.18.0.11": {"ok": True, "detail": "PTR mail01.lab.test"}}}
UNKNOWN = {"ok": None, "name": "mail01.lab.test", "reason": None,
           "addresses": {"198.18.0.11": {"ok": None, "detail": "PTR lookup failed"}}}


def test_hold_state_holds_releases_and_honours_test(monkeypatch, tmp_path):
    table = str(tmp_path / "hold.regexp")
    ret = _state(monkeypatch, BAD, test=True)(table, enabled=True)
    assert ret["result"] is None and ret["changes"]["outbound"] == "held"
    assert not Path(table).exists()                                # test=True writes nothing
    ret = _state(monkeypatch, BAD)(table, enabled=True)
    assert ret["result"] is True and "HELD" in ret["comment"] and "mail99" in ret["comment"]
    assert F.table_holds(Path(table).read_text())
    assert _state(monkeypatch, BAD)(table, enabled=True)["changes"] == {}   # idempotent
    # Resolver down: the hold stays, the state says why and fails.
    ret = _state(monkeypatch, UNKNOWN)(table, enabled=True)
    assert ret["result"] is False and ret["changes"] == {} and "could not be checked" in ret["comment"]
    assert F.table_holds(Path(table).read_text())
    ret = _state(monkeypatch, GOOD)(table, enabled=True)
    assert ret["changes"]["outbound"] == "released" and not F.table_holds(Path(table).read_text())
    # Switch off: never held, whatever DNS says.
    _state(monkeypatch, BAD)(table, enabled=True)
    ret = _state(monkeypatch, BAD)(table, enabled=False)
    assert ret["changes"]["outbound"] == "released" and not F.table_holds(Path(table).read_text())


def test_hold_switch_must_be_a_boolean(monkeypatch, tmp_path):
    ret = _state(monkeypatch, BAD)(str(tmp_path / "t"), enabled="yes")
    assert ret["result"] is False
    assert ret["comment"].startswith("mailfleet:deliverability:hold_outbound_on_bad_ptr:")


# ---------------------------------------------------------------- bad input: DKIM state

def _runner(dkim_dir, monkeypatch):
    import mailfleet_dns as runner  # the runner's directory is on this suite's sys.path
    monkeypatch.setattr(runner, "__opts__", {"mailfleet_dkim_dir": str(dkim_dir)}, raising=False)
    return runner


def test_unreadable_dkim_state_is_an_error_naming_the_setting_and_nothing_is_built(tmp_path, monkeypatch):
    runner = _runner(tmp_path, monkeypatch)
    (tmp_path / "example-a.test" / "state.json").mkdir(parents=True)   # unreadable: a folder
    (tmp_path / "example-b.test").mkdir()
    (tmp_path / "example-b.test" / "state.json").write_text("{not json")
    domains = {d: {"hosts": ["mail01.lab.test"]} for d in ("example-a.test", "example-b.test")}
    out = runner.desired_records(domains, HOSTS)
    for domain, what in (("example-a.test", "unreadable"), ("example-b.test", "is not JSON")):
        err = out[domain]["error"]
        assert err.startswith(f"mailfleet_dkim_dir ({tmp_path}): DKIM state of {domain} {what}")
        assert str(tmp_path / domain / "state.json") in err


def test_verify_compares_the_served_policy_with_the_published_one():
    import mailfleet_dns_plan as runner  # the verdict is the runner's pure side
    want = "version: STSv1\r\nmode: testing\r\nmx: mail01.lab.test\r\nmax_age: 86400\r\n"
    ok, detail = runner.policy_verdict(want, 200, want.encode())
    assert ok and "mode: testing" in detail and "mx: mail01.lab.test" in detail
    assert runner.policy_verdict(want, 200, want.replace("\r\n", "\n").encode())[0]  # LF allowed
    assert runner.policy_verdict(want, 404, b"")[1] == "HTTP 404, want 200"
    ok, detail = runner.policy_verdict(want, 200, want.replace("testing", "enforce").encode())
    assert not ok and "differs" in detail
    ok, detail = runner.policy_verdict(want, None, b"", error="certificate verify failed")
    assert not ok and detail == "not served: certificate verify failed"
