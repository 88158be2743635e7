"""_runners/mailfleet_dkim.py without Salt: the driver takes a domain from no key to
signing, publishing before and switching only after DNS shows the key; state and key
files on disk; an interrupted publish leaves a resumable state."""
import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mailfleet_dkim_runner_under_test",
                                              ROOT / "_runners" / "mailfleet_dkim.py")
runner = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runner)
dkim = runner.dkim


def fake_dns(base, domain):
    """DNS that shows what the saved state publishes (as mailfleet_dns.publish would)."""
    shown = {}

    def publish():
        state = runner.load_state(base, domain)
        for e in dkim.dns_entries(state):
            if not e.get("absent"):
                shown[e["selector"]] = f"v=DKIM1; k={e['k']}; p={e['p']}"

    def facts_of(state):
        return {"dns": {e["selector"]: shown.get(e["selector"]) for e in state["selectors"]}}
    return publish, facts_of


def test_a_new_domain_goes_to_signing_with_a_key_on_disk(tmp_path):
    base = str(tmp_path)
    publish, facts_of = fake_dns(base, "a.test")
    taken, state = runner.drive(base, "a.test", lambda: 1795600000, publish, facts_of)
    assert [a["action"] for a in taken] == ["generate", "publish", "verified",
                                            "switch_signing", "none"]
    sel = dkim.signing_selector(state)
    assert sel == "mf20261125"
    key_file = Path(dkim.key_path(base, "a.test", sel))
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert dkim.public_b64(dkim.read_private_key(str(key_file))) == state["selectors"][0]["p"]
    assert json.loads(Path(runner.state_path(base, "a.test")).read_text()) == state
    got = runner.signing_material(base, "a.test")
    assert got["selector"] == sel and got["key"].startswith("-----BEGIN PRIVATE KEY-----")
    # nothing more to do on a second run
    taken, _ = runner.drive(base, "a.test", lambda: 1795600000, publish, facts_of)
    assert [a["action"] for a in taken] == ["none"]


def test_no_switch_while_dns_does_not_show_the_key(tmp_path):
    base = str(tmp_path)
    taken, state = runner.drive(base, "a.test", lambda: 1795600000, lambda: None,
                                lambda s: {"dns": {e["selector"]: None for e in s["selectors"]}})
    assert [a["action"] for a in taken] == ["generate", "publish", "wait"]
    assert dkim.signing_selector(state) is None
    assert runner.signing_material(base, "a.test") is None


def test_a_failed_publish_keeps_the_state_before_it(tmp_path):
    base = str(tmp_path)

    def broken():
        raise dkim.DkimError("publishing failed: zone refused")
    with pytest.raises(dkim.DkimError):
        runner.drive(base, "a.test", lambda: 1795600000, broken, lambda s: {"dns": {}})
    state = runner.load_state(base, "a.test")
    assert [e["status"] for e in state["selectors"]] == ["new"]
    # the next run resumes with the same key
    publish, facts_of = fake_dns(base, "a.test")
    taken, state = runner.drive(base, "a.test", lambda: 1795600000, publish, facts_of)
    assert [a["action"] for a in taken][:1] == ["publish"]
    assert dkim.signing_selector(state) == "mf20261125"


def test_a_damaged_state_file_is_refused(tmp_path):
    os.makedirs(tmp_path / "a.test")
    (tmp_path / "a.test" / "state.json").write_text('{"version": 1, "selectors": []}')
    with pytest.raises(dkim.DkimError, match="key_type"):
        runner.load_state(str(tmp_path), "a.test")
