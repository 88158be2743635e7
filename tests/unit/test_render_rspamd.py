"""
mail.rspamd rendered with a DKIM pillar (what the mailfleet_domains ext_pillar hands a
serving host: mailfleet:dkim:<domain> = selector, key_type, key), through Salt's own
loader; nothing runs. What a postmaster checks: one key file per domain, 0640
root:_rspamd in a 0750 folder, written from pillar at run time (the key is not in the
state's arguments), the selector/path maps naming exactly those domains, the milter in
main.cf, and a bad DKIM pillar failing the run with the pillar key named.
"""
import json

import pytest

from salt_render import DEBIAN_GRAINS, SaltRender

RSA_PEM = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n"


def _render(tmp, dkim):
    pillar = {"mailfleet": {
        "lookup": {"dovecot_major": "2.3"},
        "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw", "sync_password": "sy-pw"},
        "dkim": dkim}}
    r = SaltRender(tmp, DEBIAN_GRAINS, pillar=pillar)
    high = r.show_sls("mail.rspamd")
    return r, high, r.chunks(high)


def _by_id(chunks, sid):
    found = [c[3] for c in chunks if c[0] == sid]
    assert found, sid
    return found[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return _render(tmp_path_factory.mktemp("rspamd"), {
        "example-a.test": {"selector": "mf20261130", "key_type": "rsa", "key": RSA_PEM},
        "Example-C.test": {"selector": "mf20261130e", "key_type": "ed25519",
                           "key": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="}})


def test_key_files_are_root_rspamd_0640_and_come_from_pillar_at_run_time(good):
    _, high, chunks = good
    key = _by_id(chunks, "mailfleet-rspamd-dkim-key-example-a.test")
    assert key["name"] == "/var/lib/rspamd/dkim/example-a.test.mf20261130.key"
    assert (key["user"], key["group"], key["mode"]) == ("root", "_rspamd", "0640")
    assert key["contents_pillar"] == "mailfleet:dkim:example-a.test:key"
    assert key["show_changes"] is False
    assert "BEGIN PRIVATE KEY" not in json.dumps(high)   # never in the state's arguments
    folder = _by_id(chunks, "mailfleet-rspamd-dkim-dir")
    assert (folder["group"], folder["mode"]) == ("_rspamd", "0750")
    clean = _by_id(chunks, "mailfleet-rspamd-dkim-clean")
    assert clean["clean"] is True
    # requiring the folder's own state would make clean keep everything in it
    assert {"file": "mailfleet-rspamd-dkim-dir"} not in clean.get("require", [])
    assert {"file": "mailfleet-rspamd-dkim-clean"} in key["require_in"]


def test_maps_name_every_signed_domain_and_nothing_else(good):
    _, _, chunks = good
    selectors = _by_id(chunks, "mailfleet-rspamd-dkim-map-dkim_selectors.map")["contents"]
    paths = _by_id(chunks, "mailfleet-rspamd-dkim-map-dkim_paths.map")["contents"]
    assert [l for l in selectors.splitlines() if not l.startswith("#")] == [
        "example-a.test mf20261130", "example-c.test mf20261130e"]
    assert [l for l in paths.splitlines() if not l.startswith("#")] == [
        "example-a.test /var/lib/rspamd/dkim/example-a.test.mf20261130.key",
        "example-c.test /var/lib/rspamd/dkim/example-c.test.mf20261130e.key"]


def test_signing_milter_and_headers_config(good):
    r, high, chunks = good
    files = r.render_all(high)
    signing = files["/etc/rspamd/local.d/dkim_signing.conf"]
    for line in ("sign_authenticated = true;", "sign_local = true;", "try_fallback = false;",
                 "allow_username_mismatch = false;",
                 'selector_map = "/etc/rspamd/mailfleet/dkim_selectors.map";'):
        assert line in signing
    proxy = files["/etc/rspamd/local.d/worker-proxy.inc"]
    assert 'bind_socket = "127.0.0.1:11332";' in proxy and "milter = yes;" in proxy
    assert 'use = ["authentication-results"];' in files["/etc/rspamd/local.d/milter_headers.conf"]
    actions = files["/etc/rspamd/local.d/actions.conf"]
    assert "greylist = null;" in actions and "reject = 15;" in actions
    assert "enabled = false;" in r.salt["cp.get_file_str"]("salt://mail/files/rspamd-module-disabled.conf")
    assert _by_id(chunks, "mailfleet-rspamd-off-greylist")["name"] == "/etc/rspamd/local.d/greylist.conf"
    assert _by_id(chunks, "mailfleet-rspamd-configtest")["name"] == "rspamadm configtest"


@pytest.mark.parametrize("entry, message", [
    ({"selector": "bad selector", "key_type": "rsa", "key": RSA_PEM},
     "mailfleet:dkim:example-a.test:selector: bad selector is not a DKIM selector"),
    ({"selector": "s1", "key_type": "dsa", "key": RSA_PEM},
     "mailfleet:dkim:example-a.test:key_type: use rsa or ed25519"),
    ({"selector": "s1", "key_type": "rsa"}, "mailfleet:dkim:example-a.test:key: missing or empty"),
    ({"selector": "s1", "key_type": "rsa", "key": "bm90IGEga2V5"},
     "mailfleet:dkim:example-a.test:key: not a PEM private key"),
])
def test_bad_dkim_pillar_fails_the_run_naming_the_key(tmp_path, entry, message):
    r, high, chunks = _render(tmp_path, {"example-a.test": entry})
    check = _by_id(chunks, "mailfleet-settings-valid")   # mail.validate, included: runs first
    assert check["failhard"] is True and check["order"] == 1
    ret = r.run_state(high, "mailfleet-settings-valid")
    assert ret["result"] is False and message in ret["comment"].splitlines()
    assert "PRIVATE KEY" not in ret["comment"] and "bm90IGEga2V5" not in ret["comment"]
    assert not [c for c in chunks if c[0].startswith("mailfleet-rspamd-dkim-key-")]


def test_a_good_dkim_pillar_passes_the_check(good):
    r, high, _ = good
    ret = r.run_state(high, "mailfleet-settings-valid")
    assert ret["result"] is True, ret["comment"]
