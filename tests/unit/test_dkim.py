"""
DKIM keys, key files and the rotation state machine.

The DNS record computed from a key is checked by an independent verifier: dkimpy (its own
pure-Python RSA and ASN.1, PyNaCl for ed25519) signs a message with our private key and
verifies it against the TXT record our record builder makes, served through dkimpy's
``dnsfunc`` hook.
"""
import base64
import datetime
import json
import logging
import os
import shutil
import stat
import subprocess

import dkim
import nacl.bindings
import pytest

import mailfleet_dkimkeys as K
import mailfleet_records as R

D = "example-a.test"
HOSTS = {"mail01.lab.test": {"ipv4": ["198.18.0.11"]}}
PILLAR = {"hosts": ["mail01.lab.test"]}
MESSAGE = (b"From: Alice <alice@example-a.test>\r\nTo: bob@example-b.test\r\n"
           b"Subject: rotation check\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <t1@example-a.test>\r\n\r\nHello Bob.\r\n")


@pytest.fixture(scope="module")
def rsa_key():
    return K.generate("rsa")


@pytest.fixture(scope="module")
def ed_key():
    return K.generate("ed25519")


# dkimpy logs why a verification failed; keep that out of salt's log handlers.
QUIET = logging.getLogger("test_dkim.dkimpy")
QUIET.addHandler(logging.NullHandler())
QUIET.propagate = False


def verify(message, dnsfunc, idx=None):
    if idx is None:
        return dkim.verify(message, logger=QUIET, dnsfunc=dnsfunc)
    return dkim.DKIM(message, logger=QUIET).verify(idx=idx, dnsfunc=dnsfunc)


def dnsfunc_for(entries):
    """A dkimpy DNS lookup that answers from the RRsets our builder makes (TXT joined)."""
    res = R.build(D, PILLAR, HOSTS, dkim=entries)

    def dnsfunc(name, timeout=5):
        key = (R.fqdn(name.decode() if isinstance(name, bytes) else name), "TXT")
        values = res["rrsets"].get(key)
        if not values:
            return None
        assert all(len(s.encode()) <= 255 for s in R.txt_strings(values[0]))
        return "".join(R.txt_strings(values[0])).encode("ascii")

    return dnsfunc


def sign(privkey, selector, algorithm):
    return dkim.sign(MESSAGE, selector.encode(), D.encode(), privkey,
                     signature_algorithm=algorithm,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])


# ---------------------------------------------------------------- records vs dkimpy

def test_rsa_record_verifies_with_dkimpy(rsa_key):
    assert rsa_key.key_size == 2048
    pem = K.private_bytes(rsa_key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    sig = sign(pem, "mf20261125", b"rsa-sha256")
    entry = {"selector": "mf20261125", "k": "rsa", "p": K.public_b64(rsa_key)}
    (rdata,) = R.build(D, PILLAR, HOSTS, dkim=[entry])["rrsets"][
        ("mf20261125._domainkey.example-a.test.", "TXT")]
    assert len(R.txt_strings(rdata)) == 2  # ~410 characters: split, and joined by dkimpy
    assert R.txt_value(rdata) == K.record(rsa_key)
    assert verify(sig + MESSAGE, dnsfunc=dnsfunc_for([entry]))
    # the same signature fails against another key, a revoked record and a tampered body
    other = {"selector": "mf20261125", "k": "rsa", "p": K.public_b64(K.generate("rsa", 1024))}
    assert not verify(sig + MESSAGE, dnsfunc=dnsfunc_for([other]))
    revoked = {"selector": "mf20261125", "k": "rsa", "p": ""}
    assert not verify(sig + MESSAGE, dnsfunc=dnsfunc_for([revoked]))
    assert not verify(sig + MESSAGE.replace(b"Hello", b"Hallo"),
                           dnsfunc=dnsfunc_for([entry]))


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl CLI not installed")
def test_rsa_public_value_matches_openssl(rsa_key, tmp_path):
    path = tmp_path / "k.pem"
    K.write_private_key(str(path), rsa_key)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    assert base64.b64encode(der).decode() == K.public_b64(rsa_key)


def test_ed25519_record_and_rspamd_key_file_verify_with_dkimpy(ed_key):
    file_content = K.private_bytes(ed_key)
    # Rspamd 3.4's format: one base64 string (no PEM), 64 bytes = seed + public key, the
    # libsodium secret key that crypto_sign_ed25519_seed_keypair makes from the seed.
    assert b"\n" not in file_content and not file_content.startswith(b"-----")
    raw = base64.b64decode(file_content, validate=True)
    assert len(raw) == 64
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(raw[:32])
    assert sk == raw and pk == raw[32:]
    p = K.public_b64(ed_key)
    assert base64.b64decode(p) == pk  # RFC 8463: the raw 32-byte key, no SPKI wrapper
    assert K.record(ed_key) == f"v=DKIM1; k=ed25519; p={p}"
    # dkimpy signs with the seed read back from the key file, verifies with our record
    seed_b64 = base64.b64encode(raw[:32])
    sig = sign(seed_b64, "mf20261125e", b"ed25519-sha256")
    assert b"a=ed25519-sha256" in sig
    entry = {"selector": "mf20261125e", "k": "ed25519", "p": p}
    assert verify(sig + MESSAGE, dnsfunc=dnsfunc_for([entry]))
    other = {"selector": "mf20261125e", "k": "ed25519",
             "p": K.public_b64(K.generate("ed25519"))}
    assert not verify(sig + MESSAGE, dnsfunc=dnsfunc_for([other]))


def test_dual_signature_rsa_and_ed25519(rsa_key, ed_key):
    """The optional second signature: both verify against one published set of records."""
    entries = [{"selector": "mf20261125", "k": "rsa", "p": K.public_b64(rsa_key)},
               {"selector": "mf20261125e", "k": "ed25519", "p": K.public_b64(ed_key)}]
    s1 = sign(K.private_bytes(rsa_key), "mf20261125", b"rsa-sha256")
    s2 = dkim.sign(s1 + MESSAGE, b"mf20261125e", D.encode(), K.ed25519_seed_b64(ed_key).encode(),
                   signature_algorithm=b"ed25519-sha256")
    signed = s2 + s1 + MESSAGE
    lookup = dnsfunc_for(entries)
    assert verify(signed, lookup, idx=0) and verify(signed, lookup, idx=1)


# ---------------------------------------------------------------- key files

def test_write_private_key_is_0600_atomic_and_reloads(tmp_path, rsa_key, ed_key):
    for key, name in ((rsa_key, "rsa.key"), (ed_key, "ed.key")):
        path = tmp_path / "keys" / D / name
        p = K.write_private_key(str(path), key)
        assert p == K.public_b64(key)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert K.public_b64(K.read_private_key(str(path))) == p
        assert os.listdir(path.parent) == [name] or ".tmp-" not in "".join(
            os.listdir(path.parent))
    # replacing keeps no temporary file behind, and a wider mode is only set when asked
    path = tmp_path / "keys" / D / "ed.key"
    K.write_private_key(str(path), ed_key, mode=0o640)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert sorted(os.listdir(path.parent)) == ["ed.key", "rsa.key"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_write_private_key_owner(tmp_path, ed_key):
    path = tmp_path / "k"
    K.write_private_key(str(path), ed_key, mode=0o640, uid=0, gid=65534)
    st = os.stat(path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o640)


def test_unreadable_or_bad_key_files_name_the_path(tmp_path, ed_key):
    missing = tmp_path / "nope.key"
    with pytest.raises(K.DkimError, match=f"{missing}: cannot read"):
        K.read_private_key(str(missing))
    with pytest.raises(K.DkimError, match="cannot read"):
        K.read_private_key(str(tmp_path))  # a directory
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"this is not a key\n")
    with pytest.raises(K.DkimError, match=f"{bad}: neither PEM nor base64"):
        K.read_private_key(str(bad))
    bad.write_bytes(base64.b64encode(b"x" * 48))
    with pytest.raises(K.DkimError, match="48 bytes"):
        K.read_private_key(str(bad))
    raw = base64.b64decode(K.private_bytes(ed_key))
    bad.write_bytes(base64.b64encode(raw[:32] + b"\0" * 32))
    with pytest.raises(K.DkimError, match="does not match"):
        K.read_private_key(str(bad))
    bad.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(K.DkimError, match="PEM"):
        K.read_private_key(str(bad))


def test_other_accepted_key_forms(ed_key):
    from cryptography.hazmat.primitives import serialization

    pem = ed_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())
    assert K.public_b64(K.load_private(pem)) == K.public_b64(ed_key)
    seed_only = K.ed25519_seed_b64(ed_key) + "\n"  # rspamadm's ed25519-seed form
    assert K.public_b64(K.load_private(seed_only)) == K.public_b64(ed_key)


def test_generate_refuses_weak_or_unknown():
    with pytest.raises(K.DkimError, match="RFC 8301"):
        K.generate("rsa", 512)
    with pytest.raises(K.DkimError):
        K.generate("dsa")


def test_key_path_refuses_escaping_names():
    assert K.key_path("/srv/dkim", "Example-A.test.", "mf20261125") == \
        "/srv/dkim/example-a.test/mf20261125.key"
    for domain, sel in (("../etc", "s"), ("example.test", "../x"), ("example.test", "a/b"),
                        ("example", "s")):
        with pytest.raises(K.DkimError):
            K.key_path("/srv/dkim", domain, sel)


def test_selector_names():
    now = datetime.datetime(2026, 11, 25, 23, 59, tzinfo=datetime.timezone.utc)
    assert K.selector_name(now) == "mf20261125"
    assert K.selector_name(now, "ed25519") == "mf20261125e"
    assert K.selector_name(now, taken=["mf20261125"]) == "mf20261125-2"
    assert K.selector_name(now, taken=["mf20261125", "mf20261125-2"]) == "mf20261125-3"
    assert K.selector_name(int(now.timestamp()), prefix="lab") == "lab20261125"
    with pytest.raises(K.DkimError):
        K.selector_name(now, prefix="Bad_")


# ---------------------------------------------------------------- rotation

DAY = 86400
T0 = int(datetime.datetime(2026, 11, 25, 12, tzinfo=datetime.timezone.utc).timestamp())
SETTINGS = {"keep_old_days": 7, "revoked_days": 7, "republish_seconds": 600}


class World:
    """The authoritative DNS (via our builder and diff), the master's keys, the hosts."""

    def __init__(self, lag=0):
        self.zone = {}       # what the authoritative server holds
        self.visible = {}    # (name, type) -> (time it becomes visible to resolvers, value)
        self.lag = lag
        self.keys = {}       # selector -> private key (the master's key store)
        self.signing = None  # the selector the hosts sign with
        self.publishes = 0
        self.state_file = None  # the rotation state as saved on the master

    def publish(self, state, now):
        res = R.build(D, PILLAR, HOSTS, dkim=K.dns_entries(state))
        changes = R.diff(res, self.zone)
        for entry in changes["missing"] + changes["wrong"] + changes["extra"]:
            if not entry["publish"]:
                continue
            key = (entry["name"], entry["type"])
            if entry["desired"]:
                self.zone[key] = list(entry["desired"])
            else:
                self.zone.pop(key, None)
            self.visible[key] = now + self.lag
        self.publishes += 1

    def resolve(self, name, now):
        key = (name, "TXT")
        if key in self.visible and now < self.visible[key]:
            return ...  # the resolver still has the old answer: treat as not yet there
        values = self.zone.get(key)
        return R.txt_value(values[0]) if values else None

    def facts(self, state, now):
        dns = {}
        for e in state["selectors"]:
            seen = self.resolve(f"{e['selector']}._domainkey.{D}.", now)
            if seen is not ...:
                dns[e["selector"]] = seen
        keys = {s: K.public_b64(k) for s, k in self.keys.items()}
        keys.update({e["selector"]: None for e in state["selectors"]
                     if e["selector"] not in self.keys and e["status"] != "new"})
        return {"dns": dns, "keys": {s: keys.get(s) for s in keys}}

    def check_invariant(self, now):
        """Mail is only ever signed with a selector that DNS shows with that key."""
        if self.signing is None:
            return
        seen = self.zone.get((f"{self.signing}._domainkey.{D}.", "TXT"))
        assert seen, f"signing with {self.signing}, which has no record"
        assert K.parse_record(R.txt_value(seen[0]))["p"] == K.public_b64(
            self.keys[self.signing])


class Crash(Exception):
    pass


def drive(state, now, world, log, crash_at=None, crash_before_effects=False, settings=SETTINGS):
    """The runner's loop; the state is saved (JSON round trip) only after its effects."""
    while True:
        act = K.next_step(state, now, world.facts(state, now), settings)
        if act["action"] in ("none", "wait", "error"):
            return state, act
        if crash_at is not None and len(log) == crash_at and crash_before_effects:
            raise Crash(act["action"])
        key = K.generate(state["key_type"]) if act["action"] == "generate" else None
        new = K.advance(state, act, now, facts=world.facts(state, now),
                        public=key and K.public_b64(key))
        for effect in act["effects"]:
            if effect == "write_key":
                world.keys[act["selector"]] = key
            elif effect == "publish_dns":
                world.publish(new, now)
            elif effect == "push_signing":
                world.signing = K.signing_selector(new)
            elif effect == "delete_key":
                world.keys.pop(act["selector"], None)
        world.check_invariant(now)
        if crash_at is not None and len(log) == crash_at:
            raise Crash(act["action"])
        world.state_file = json.dumps(new)  # saved only now, after the effects
        state = json.loads(world.state_file)
        assert K.validate_state(state) == []
        log.append((act["action"], act["selector"]))


def scenario(world, crash_at=None, crash_before_effects=False):
    """First key, a requested rotation 30 days later, then 7 + 7 days: the full life."""
    log = []
    state = K.new_state(D, "ed25519")
    world.state_file = json.dumps(state)
    steps = [(T0, None), (T0 + 30 * DAY, "rotate"), (T0 + 37 * DAY, None),
             (T0 + 44 * DAY, None)]
    for now, what in steps:
        if what == "rotate":
            state = K.request_rotation(state)
            world.state_file = json.dumps(state)
        while True:
            try:
                state, last = drive(state, now, world, log, crash_at, crash_before_effects)
                break
            except Crash:
                crash_at = None  # the process is restarted: resume from the saved state
                state = json.loads(world.state_file)
    return state, log, last


def test_rotation_step_sequence():
    world = World()
    state, log, last = scenario(world)
    first, second = "mf20261125e", "mf20261225e"
    assert log == [
        ("generate", first), ("publish", first), ("verified", first),
        ("switch_signing", first),
        ("generate", second), ("publish", second), ("verified", second),
        ("switch_signing", second),
        ("revoke", first),
        ("remove", first), ("forget", first),
    ]
    assert last["action"] == "none"
    assert [(e["selector"], e["status"]) for e in state["selectors"]] == [(second, "signing")]
    assert world.signing == second and set(world.keys) == {second}
    assert (f"{first}._domainkey.{D}.", "TXT") not in world.zone


def test_rotation_timeline_details():
    world = World()
    log = []
    state = K.new_state(D, "ed25519")
    state, last = drive(state, T0, world, log)
    assert last["action"] == "none" and last["next_at"] is None  # no automatic rotation
    state = K.request_rotation(state)
    state, last = drive(state, T0 + DAY, world, log)
    old, new = (e["selector"] for e in state["selectors"])
    assert [e["status"] for e in state["selectors"]] == ["old_kept", "signing"]
    assert last["next_at"] == T0 + DAY + 7 * DAY
    # six days later the old key is still published with its key
    state, last = drive(state, T0 + 7 * DAY, world, log)
    assert last["action"] == "none" and state["selectors"][0]["status"] == "old_kept"
    # then revoked: an empty p=, and its private key deleted
    state, _ = drive(state, T0 + 8 * DAY, world, log)
    assert world.resolve(f"{old}._domainkey.{D}.", T0 + 8 * DAY) == "v=DKIM1; k=ed25519; p="
    assert old not in world.keys
    state, _ = drive(state, T0 + 15 * DAY, world, log)
    assert [e["selector"] for e in state["selectors"]] == [new]


def test_automatic_rotation_after_rotate_days():
    world = World()
    settings = dict(SETTINGS, rotate_days=90)
    state, _ = drive(K.new_state(D, "ed25519"), T0, world, [], settings=settings)
    act = K.next_step(state, T0 + 89 * DAY, world.facts(state, T0), settings)
    assert act["action"] == "none" and act["next_at"] == T0 + 90 * DAY
    act = K.next_step(state, T0 + 90 * DAY, world.facts(state, T0), settings)
    assert act["action"] == "generate" and "90 days old" in act["why"]


@pytest.mark.parametrize("before", [False, True], ids=["after-effects", "before-effects"])
def test_rotation_resumes_after_an_interruption_at_any_step(before):
    reference_state, reference_log, _ = scenario(World())
    for k in range(len(reference_log)):
        world = World()
        state, log, last = scenario(world, crash_at=k, crash_before_effects=before)
        assert [a for a, _ in log] == [a for a, _ in reference_log], k
        assert [(e["selector"], e["status"]) for e in state["selectors"]] == \
            [(e["selector"], e["status"]) for e in reference_state["selectors"]], k
        assert last["action"] == "none"
        # DNS ends exactly as the state says, and the hosts sign with the live selector
        res = R.build(D, PILLAR, HOSTS, dkim=K.dns_entries(state))
        changes = R.diff(res, world.zone)
        assert not [e for k in ("missing", "wrong", "extra") for e in changes[k]
                    if e["publish"]], k
        assert world.signing == K.signing_selector(state)


def test_waits_for_dns_and_publishes_again():
    world = World(lag=900)  # resolvers see a change 15 minutes after it is made
    log = []
    state, last = drive(K.new_state(D, "ed25519"), T0, world, log)
    assert [a for a, _ in log] == ["generate", "publish"]
    assert last["action"] == "wait" and "waiting for DNS" in last["why"]
    assert world.signing is None  # nothing signs with an unverified selector
    state, last = drive(state, T0 + 300, world, log)
    assert last["action"] == "wait" and len(log) == 2
    state, last = drive(state, T0 + 700, world, log)  # past republish_seconds: publish again
    assert log[-1][0] == "publish" and world.publishes == 2
    state, last = drive(state, T0 + 700 + 900, world, log)
    assert [a for a, _ in log[-2:]] == ["verified", "switch_signing"]


def test_never_switches_signing_to_a_selector_that_does_not_resolve():
    world = World()
    log = []
    state = K.new_state(D, "rsa")
    key = K.generate("ed25519")  # the key type does not matter for the decision
    act = K.next_step(state, T0, {}, SETTINGS)
    assert act["action"] == "generate" and act["selector"] == "mf20261125"
    state = K.advance(state, act, T0, public=K.public_b64(key))
    state = K.advance(state, K.next_step(state, T0, {}, SETTINGS), T0)  # publish
    name = "mf20261125"
    good = f"v=DKIM1; k=rsa; p={K.public_b64(key)}"
    state = K.advance(state, K.next_step(state, T0, {"dns": {name: good}}, SETTINGS), T0)
    assert state["selectors"][0]["status"] == "verified"
    # DNS no longer shows it (deleted, a wrong key, or not looked up): no switch
    for facts, why in (({"dns": {name: None}}, "not found in DNS"),
                       ({"dns": {name: "v=DKIM1; k=rsa; p=QUJD"}}, "DNS shows"),
                       ({}, "not looked up"),
                       ({"dns": {name: "v=DKIM1; k=rsa; p="}}, "DNS shows")):
        act = K.next_step(state, T0 + 60, facts, SETTINGS)
        assert act["action"] in ("wait", "publish"), act
        assert act["action"] != "switch_signing"
        with pytest.raises(K.DkimError, match=f"refusing to sign with selector {name}"):
            K.advance(state, dict(act, action="switch_signing", selector=name), T0 + 60,
                      facts=facts)
        if act["action"] == "wait":
            assert f"refusing to switch signing to {name}" in act["why"] and why in act["why"]
    act = K.next_step(state, T0 + 60, {"dns": {name: good}}, SETTINGS)
    assert act["action"] == "switch_signing"
    assert K.advance(state, act, T0 + 60, facts={"dns": {name: good}})["selectors"][0][
        "status"] == "signing"
    assert world.signing is None and log == []


def test_settle_time_before_switching():
    key = K.generate("ed25519")
    state = K.new_state(D, "ed25519")
    settings = dict(SETTINGS, settle_seconds=3600)
    state = K.advance(state, K.next_step(state, T0, {}, settings), T0, public=K.public_b64(key))
    state = K.advance(state, K.next_step(state, T0, {}, settings), T0)
    facts = {"dns": {"mf20261125e": K.record(key)}}
    state = K.advance(state, K.next_step(state, T0, facts, settings), T0)
    act = K.next_step(state, T0 + 100, facts, settings)
    assert act["action"] == "wait" and act["until"] == T0 + 3600
    assert K.next_step(state, T0 + 3600, facts, settings)["action"] == "switch_signing"


def test_missing_private_key_stops_with_a_clear_error():
    world = World()
    state, _ = drive(K.new_state(D, "ed25519"), T0, world, [])
    sel = K.signing_selector(state)
    world.keys.pop(sel)
    act = K.next_step(state, T0 + 60, world.facts(state, T0 + 60), SETTINGS)
    assert act["action"] == "error" and sel in act["why"] and "unreadable" in act["why"]
    with pytest.raises(K.DkimError):
        K.advance(state, act, T0 + 60)


def test_signing_record_deleted_behind_our_back_is_published_again():
    world = World()
    state, _ = drive(K.new_state(D, "ed25519"), T0, world, [])
    sel = K.signing_selector(state)
    del world.zone[(f"{sel}._domainkey.{D}.", "TXT")]
    act = K.next_step(state, T0 + 3600, world.facts(state, T0 + 3600), SETTINGS)
    assert act["action"] == "publish" and act["selector"] == sel
    log = []
    state, last = drive(state, T0 + 3600, world, log)
    assert log == [("publish", sel)] and last["action"] == "none"
    world.check_invariant(T0 + 3600)


def test_advance_refuses_out_of_order_steps():
    state = K.new_state(D, "ed25519")
    with pytest.raises(K.DkimError):
        K.advance(state, {"action": "revoke", "selector": "nope"}, T0)
    key = K.generate("ed25519")
    state = K.advance(state, K.next_step(state, T0, {}), T0, public=K.public_b64(key))
    with pytest.raises(K.DkimError, match="is new"):
        K.advance(state, {"action": "switch_signing", "selector": "mf20261125e"}, T0,
                  facts={"dns": {"mf20261125e": K.record(key)}})
    assert K.validate_state({"version": 1, "key_type": "rsa", "selectors": [
        {"selector": "a", "status": "signing"}, {"selector": "b", "status": "signing"}]})


def test_dns_entries_per_status():
    state = {"version": 1, "domain": D, "key_type": "rsa", "rotate": False, "selectors": [
        {"selector": s, "k": "rsa", "p": "QUJD", "status": s}
        for s in ("new", "published", "verified", "signing", "old_kept", "revoked", "removed")]}
    assert K.dns_entries(state) == [
        {"selector": "published", "k": "rsa", "p": "QUJD"},
        {"selector": "verified", "k": "rsa", "p": "QUJD"},
        {"selector": "signing", "k": "rsa", "p": "QUJD"},
        {"selector": "old_kept", "k": "rsa", "p": "QUJD"},
        {"selector": "revoked", "k": "rsa", "p": ""},
        {"selector": "removed", "absent": True},
    ]
    assert K.signing_selector(state) == "signing"
