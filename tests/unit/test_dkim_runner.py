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
    got = runner._signing_material(base, "a.test")
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
    assert runner._signing_material(base, "a.test") is None


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


def _rotate_to_second_key(base, publish, facts_of, push, t):
    runner.drive(base, "a.test", lambda: t, publish, facts_of, push=push)
    runner.save_state(base, "a.test", dkim.request_rotation(runner.load_state(base, "a.test")))


def test_a_rotation_pushes_the_new_key_before_anything_is_revoked(tmp_path):
    base, t0 = str(tmp_path), 1795600000
    publish, facts_of = fake_dns(base, "a.test")
    pushed = []
    settings = {"keep_old_days": 10 / 86400, "revoked_days": 10 / 86400}
    _rotate_to_second_key(base, publish, facts_of, lambda: pushed.append("first"), t0)
    assert pushed == []              # a first key has no old one to protect: highstate installs it
    taken, state = runner.drive(base, "a.test", lambda: t0 + 5, publish, facts_of, settings,
                                push=lambda: pushed.append(dkim.signing_selector(
                                    runner.load_state(base, "a.test"))))
    second = dkim.signing_selector(state)
    assert [a["action"] for a in taken] == ["generate", "publish", "verified", "switch_signing",
                                            "push", "none"]
    assert pushed == [second]        # pushed after the switch was saved
    assert [e.get("pushed") for e in state["selectors"] if e["selector"] == second] == [True]
    taken, state = runner.drive(base, "a.test", lambda: t0 + 20, publish, facts_of, settings,
                                push=lambda: pushed.append("again"))
    assert [a["action"] for a in taken][:1] == ["revoke"] and pushed == [second]


def test_a_failed_push_revokes_nothing_and_the_next_run_pushes_again(tmp_path):
    base, t0 = str(tmp_path), 1795600000
    publish, facts_of = fake_dns(base, "a.test")
    settings = {"keep_old_days": 0, "revoked_days": 0}
    _rotate_to_second_key(base, publish, facts_of, lambda: None, t0)
    first = dkim.signing_selector(runner.load_state(base, "a.test"))

    def host_down():
        raise dkim.DkimError("installing the signing key failed: mail02: no answer")
    with pytest.raises(dkim.DkimError, match="mail02"):
        runner.drive(base, "a.test", lambda: t0 + 5, publish, facts_of, settings, push=host_down)
    state = runner.load_state(base, "a.test")
    statuses = {e["selector"]: e["status"] for e in state["selectors"]}
    assert statuses[first] == "old_kept"   # due for revocation (keep 0), yet not revoked
    # a later run without a working push still revokes nothing
    with pytest.raises(dkim.DkimError):
        runner.drive(base, "a.test", lambda: t0 + 60, publish, facts_of, settings, push=host_down)
    assert {e["selector"]: e["status"] for e in runner.load_state(base, "a.test")["selectors"]}[first] == "old_kept"
    taken, state = runner.drive(base, "a.test", lambda: t0 + 60, publish, facts_of, settings,
                                push=lambda: None)
    assert [a["action"] for a in taken][:2] == ["push", "revoke"]


def test_rotation_settings_layers_and_errors():
    got = runner.rotation_settings({"keep_old_days": 3}, {"keep_old_days": 1, "revoked_days": 2},
                                   {"revoked_days": 0.0001})
    assert got == {"keep_old_days": 1, "revoked_days": 0.0001}
    with pytest.raises(dkim.DkimError, match=r"mailfleet:domains:<domain>:dkim: unknown setting 'keep_days'"):
        runner.rotation_settings(None, {"keep_days": 1}, None)
    with pytest.raises(dkim.DkimError, match=r"arguments:revoked_days: 'soon' is not a number"):
        runner.rotation_settings(None, None, {"revoked_days": "soon"})


def test_a_forgotten_selector_name_is_never_used_again(tmp_path):
    # Seen in the lab: after the old selector was removed and forgotten, the next rotation
    # on the same day took its name back with a new key, and the receiver, still holding the
    # old record in its cache (TTL), failed every signature.
    base, t0 = str(tmp_path), 1795600000
    publish, facts_of = fake_dns(base, "a.test")
    zero = {"keep_old_days": 0, "revoked_days": 0}
    runner.drive(base, "a.test", lambda: t0, publish, facts_of, zero)
    names = []
    for i in range(3):
        runner.save_state(base, "a.test", dkim.request_rotation(runner.load_state(base, "a.test")))
        taken, state = runner.drive(base, "a.test", lambda: t0 + 10 * (i + 1), publish,
                                    lambda s: {"dns": {e["selector"]: (None if e["status"] == "removed"
                                                                       else facts_of(s)["dns"][e["selector"]])
                                                       for e in s["selectors"]}}, zero)
        assert "forget" in [a["action"] for a in taken]
        names.append(dkim.signing_selector(state))
    assert names == ["mf20261125-2", "mf20261125-3", "mf20261125-4"]
    assert state["retired"] == ["mf20261125", "mf20261125-2", "mf20261125-3"]


def test_no_runner_function_hands_out_a_private_key():
    # What Salt loads (salt-run mailfleet_dkim.*) is __load__: none of it returns a key
    assert set(runner.__load__) == {"ensure", "status"}
    assert not hasattr(runner, "signing_material")
