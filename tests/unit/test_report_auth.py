"""Issue 13, finding 1: reports carry proof of their sender (_utils/mailfleet_report.py).

Real key files in a temporary key store, real HMACs; each test is what a compromised host
tries or what the postmaster does (rotate, isolate)."""
import json
import os
import stat

import pytest

import mailfleet_report as rep

TAG = "mailfleet/dnsbl/transition"
H1, H2 = "mail01.lab.test", "mail02.lab.test"


@pytest.fixture
def store(tmp_path):
    return rep.KeyStore(str(tmp_path / "keys"))


def listing(host):
    return {"host": host, "ips": ["198.18.0.11"], "transitions": [{"ip": "198.18.0.11", "state": "listed"}]}


class Nonces:
    def __init__(self):
        self.used = set()

    def __call__(self, host, nonce, ts):
        if (host, nonce) in self.used:
            return True
        self.used.add((host, nonce))
        return False


def test_a_genuine_report_is_accepted_and_names_its_sender(store):
    signed = rep.sign(store.ensure(H1), TAG, listing(H1))
    host, body = rep.verify(TAG, json.loads(json.dumps(signed)), store.keys, seen=Nonces())
    assert host == H1 and body == listing(H1)


def test_a_listing_reported_by_mail02_about_mail01_is_refused(store):
    store.ensure(H1)
    forged = rep.sign(store.ensure(H2), TAG, listing(H1))  # mail02 holds only its own key
    with pytest.raises(rep.Refused, match="no valid key|bad signature"):
        rep.verify(TAG, forged, store.keys, seen=Nonces())


def test_a_report_altered_after_signing_or_moved_to_another_tag_is_refused(store):
    signed = rep.sign(store.ensure(H1), TAG, listing(H1))
    altered = json.loads(json.dumps(signed))
    altered["transitions"][0]["ip"] = "198.18.0.12"
    with pytest.raises(rep.Refused, match="bad signature"):
        rep.verify(TAG, altered, store.keys)
    with pytest.raises(rep.Refused, match="bad signature"):
        rep.verify("mailfleet/abuse/report", signed, store.keys)


def test_an_unsigned_report_is_refused(store):
    store.ensure(H1)
    with pytest.raises(rep.Refused, match="unsigned"):
        rep.verify(TAG, listing(H1), store.keys)


def test_a_replayed_report_is_refused_and_an_old_one_too(store):
    key, seen = store.ensure(H1), Nonces()
    signed = rep.sign(key, TAG, listing(H1))
    rep.verify(TAG, signed, store.keys, seen=seen)
    with pytest.raises(rep.Refused, match="replayed"):
        rep.verify(TAG, signed, store.keys, seen=seen)
    old = rep.sign(key, TAG, listing(H1), now=1_000_000)
    with pytest.raises(rep.Refused, match="old"):
        rep.verify(TAG, old, store.keys, now=1_000_000 + rep.WINDOW + 1, seen=seen)


def test_a_rotation_keeps_reports_in_flight_valid_for_the_grace_only(store):
    before = store.ensure(H1)
    in_flight = rep.sign(before, TAG, listing(H1), now=2_000_000)
    store.rotate(H1, now=2_000_001)
    after = store.ensure(H1)
    assert after["kid"] != before["kid"]
    rep.verify(TAG, in_flight, lambda h: store.keys(h, now=2_000_002), now=2_000_002)
    late = rep.sign(before, TAG, listing(H1), now=2_000_001 + rep.GRACE + 5)
    with pytest.raises(rep.Refused, match="no valid key"):
        rep.verify(TAG, late, lambda h: store.keys(h, now=2_000_001 + rep.GRACE + 5), now=2_000_001 + rep.GRACE + 5)


def test_an_isolated_host_has_no_valid_key_until_restored(store):
    key = store.ensure(H2)
    store.revoke(H2)
    assert store.ensure(H2) is None and store.keys(H2) == {}
    with pytest.raises(rep.Refused, match="no valid key"):
        rep.verify(TAG, rep.sign(key, TAG, listing(H2)), store.keys)
    store.restore(H2)
    fresh = store.ensure(H2)
    assert fresh["kid"] != key["kid"]
    rep.verify(TAG, rep.sign(fresh, TAG, listing(H2)), store.keys)


def test_key_files_are_private_and_names_cannot_escape_the_store(store):
    store.ensure(H1)
    path = os.path.join(store.dir, f"{H1}.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for bad in ("../etc/passwd", "a/b", "", "x" * 300):
        with pytest.raises(ValueError):
            store.ensure(bad)


def test_a_huge_or_malformed_signature_is_refused_before_any_key_lookup(store):
    looked = []

    def keys_of(host):
        looked.append(host)
        return store.keys(host)
    for bad in ({"host": H1, "_auth": "x"}, {"host": H1, "_auth": {"kid": "a", "ts": "1", "nonce": "n" * 12, "mac": "0" * 64}},
                {"host": H1, "_auth": {}, "junk": "x" * (rep.MAX_BYTES + 1)}):
        with pytest.raises(rep.Refused):
            rep.verify(TAG, bad, keys_of)
    assert looked == []


def test_the_id_salts_script_engine_adds_after_signing_is_dropped_unproven(store):
    signed = rep.sign(store.ensure(H1), TAG, listing(H1))
    as_received = dict(signed, id="mail02.lab.test")  # whatever it says, it is not signed
    host, body = rep.verify(TAG, as_received, store.keys)
    assert host == H1 and "id" not in body
    with pytest.raises(rep.Refused, match="bad signature"):
        rep.verify(TAG, dict(as_received, ips=["198.18.0.12"]), store.keys)


def test_the_nonce_store_shared_by_reactor_threads_keeps_its_wal_while_open(tmp_path):
    # Same POSIX lock pitfall as the ledger (tests/unit/test_ledger_file.py): a second reactor
    # job opening the store must not drop the first one's locks on the file.
    import subprocess
    import sys
    first = rep.NonceStore(str(tmp_path / "keys"))
    try:
        assert first(H1, "n" * 16, 1.0) is False
        second = rep.NonceStore(str(tmp_path / "keys"))
        path = os.path.join(tmp_path, "keys", "nonces.sqlite")
        subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                        " c.execute('SELECT count(*) FROM nonces').fetchone(); c.close()", path],
                       check=True, timeout=60)
        assert os.path.exists(path + "-wal")
        assert second(H1, "n" * 16, 1.0) is True            # the replay is still seen
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        second.close()
    finally:
        first.close()
