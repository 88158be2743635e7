"""Pure parts of _runners/mailcheck.py: minion returns normalised, the fleet table, the
arguments passed on to the minions."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mailcheck_runner_under_test",
                                              ROOT / "_runners" / "mailcheck.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)

OK = [{"check": "smtp-25", "ok": True, "detail": "banner 220 mail01.lab.test ESMTP"},
      {"check": "fcrdns", "ok": True, "detail": "A mail01.lab.test = 198.18.0.11"}]


def test_normalize_return_keeps_results():
    assert runner.normalize_return({"ret": OK, "retcode": 0}) == OK


def test_normalize_return_minion_down():
    assert runner.normalize_return({"failed": True}) == [
        {"check": "minion", "ok": False, "detail": "no return: minion down, unreachable or timed out"}]


def test_normalize_return_module_missing_or_crash():
    got = runner.normalize_return({"ret": "'mailcheck.ritual' is not available.", "retcode": 254})
    assert got == [{"check": "minion", "ok": False,
                    "detail": "ritual did not run (retcode 254): 'mailcheck.ritual' is not available."}]
    got = runner.normalize_return({"ret": "Traceback...\n  ...\nValueError: boom", "retcode": 1})
    assert got[0]["detail"].endswith("ValueError: boom")


def test_normalize_return_ok_must_be_true():
    got = runner.normalize_return({"ret": [{"check": "x", "ok": "true", "detail": 3}]})
    assert got == [{"check": "x", "ok": False, "detail": "3"}]


def test_fleet_table_all_pass():
    text = runner.fleet_table({"mail02.lab.test": OK, "mail01.lab.test": OK})
    lines = text.splitlines()
    assert lines[0].split() == ["HOST", "CHECK", "RESULT", "DETAIL"]
    assert lines[1].startswith("mail01.lab.test  smtp-25  PASS    banner 220")
    assert lines[3].startswith("mail02.lab.test")
    assert lines[-1] == "PASS: 4 checks on 2 hosts"


def test_fleet_table_failure_is_named():
    bad = [{"check": "relay-refused", "ok": False, "detail": "OPEN RELAY: RCPT accepted"}]
    returns = {"mail01.lab.test": OK, "mail02.lab.test": OK + bad}
    text = runner.fleet_table(returns)
    assert "mail02.lab.test  relay-refused  FAIL    OPEN RELAY: RCPT accepted" in text
    assert text.splitlines()[-1] == "FAIL: 1 of 5 checks failed on 1 of 2 hosts (mail02.lab.test)"
    assert runner.failing(returns) == [("mail02.lab.test", bad[0])]


def test_fleet_table_nobody():
    assert "no mail host answered" in runner.fleet_table({})


def test_ritual_kwargs():
    assert runner.ritual_kwargs({"timeout": 5, "__pub_user": "root", "checks": "smtp"}) == {
        "timeout": 5, "checks": "smtp"}
    with pytest.raises(ValueError, match="unknown argument"):
        runner.ritual_kwargs({"tiemout": 5})
