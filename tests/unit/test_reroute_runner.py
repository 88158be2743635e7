"""The mailfleet_reroute runner's pure parts: event validation (forged host, foreign
addresses), the plan (relay through a clean peer, hold when none), the order of steps (a peer
admits before a host relays; a host is back to direct before its peer drops it), the pillar
the ledger hands each host, and the ledger tables (sqlite, real file). Also the dnsbl
reactor rendered with hostile event data, and the main.cf block rendered from that pillar."""
import sys
from pathlib import Path

import jinja2
import pytest

import mailfleet_reroute_plan as reroute_plan_lib
import mailfleet_reroute as ob
from signing import signed

TAG = "mailfleet/dnsbl/transition"

sys.path.insert(0, str(Path(__file__).parent))
from test_reactor_render import HOSTILE, render

H1, H2, H3 = "mail01.lab.test", "mail02.lab.test", "mail03.lab.test"
IPS = ["198.18.0.11", "2001:db8::11"]


def ev(*trans, host=H1):
    return {"host": host, "transitions": [dict({"zone": "dnsbl.lab.test", "codes": ["127.0.0.2"], "why": "x"}, **t)
                                          for t in trans]}


# --- validation ---------------------------------------------------------------------------

def test_valid_event():
    trans, refused = reroute_plan_lib.check_event(ev({"ip": "198.18.0.11", "state": "listed"},
                                       {"ip": "2001:DB8::11", "state": "cleared", "zone": "ZEN.spamhaus.org."}), H1, IPS)
    assert [(t["ip"], t["zone"], t["state"]) for t in trans] == [
        ("198.18.0.11", "dnsbl.lab.test", "listed"), ("2001:db8::11", "zen.spamhaus.org", "cleared")]
    assert refused == []


def test_forged_host_is_refused():
    with pytest.raises(reroute_plan_lib.Refused, match="names host 'mail02.lab.test' but was sent by 'mail01.lab.test'"):
        reroute_plan_lib.check_event(ev({"ip": "198.18.0.12", "state": "listed"}, host=H2), H1, IPS)


@pytest.mark.parametrize("t,why", [
    ({"ip": "198.18.0.12", "state": "listed"}, "not an address of mail01.lab.test"),   # mail02's address
    ({"ip": "203.0.113.9", "state": "listed"}, "not an address of mail01.lab.test"),
    ({"ip": "nope", "state": "listed"}, "not an address"),
    ({"ip": "198.18.0.11", "state": "on fire"}, "bad state"),
    ({"ip": "198.18.0.11", "state": "listed", "zone": "bad zone;rm"}, "bad zone"),
    ({"ip": "198.18.0.11", "state": "listed", "zone": 5}, "bad zone"),
])
def test_bad_transitions_are_refused_one_by_one(t, why):
    trans, refused = reroute_plan_lib.check_event(ev(t, {"ip": "198.18.0.11", "state": "cleared"}), H1, IPS)
    assert [x["state"] for x in trans] == ["cleared"]
    assert len(refused) == 1 and why in refused[0][1]


@pytest.mark.parametrize("payload,why", [
    (None, "not a mapping"), ([], "not a mapping"),
    ({"host": H1}, "transitions must be a list"),
    ({"host": H1, "transitions": [{}] * 501}, "transitions must be a list"),
    ({"host": H1, "transitions": [], "junk": "x" * 300000}, "too large"),
])
def test_bad_events_are_refused_whole(payload, why):
    with pytest.raises(reroute_plan_lib.Refused, match=why):
        reroute_plan_lib.check_event(payload, H1, IPS)


# --- plan and steps -------------------------------------------------------------------------

FLEET = {H1: {}, H2: {}, H3: {}}


@pytest.mark.parametrize("fleet,listed,current,expected", [
    # nothing listed: everyone direct
    (FLEET, set(), {}, {H1: ("normal", None), H2: ("normal", None), H3: ("normal", None)}),
    # one listed: relays through the least loaded clean peer
    (FLEET, {H1}, {}, {H1: ("relay", H2), H2: ("normal", None), H3: ("normal", None)}),
    # two listed: spread over the clean ones... only H3 is clean
    (FLEET, {H1, H2}, {}, {H1: ("relay", H3), H2: ("relay", H3), H3: ("normal", None)}),
    # all listed: everyone held
    (FLEET, {H1, H2, H3}, {}, {H1: ("hold", None), H2: ("hold", None), H3: ("hold", None)}),
    # a peer still clean is kept (no flapping)
    (FLEET, {H1}, {H1: ("relay", H3)}, {H1: ("relay", H3), H2: ("normal", None), H3: ("normal", None)}),
    # the peer became listed: move to another clean peer
    (FLEET, {H1, H3}, {H1: ("relay", H3)}, {H1: ("relay", H2), H2: ("normal", None), H3: ("relay", H2)}),
    # a host opted out of being a peer
    ({H1: {}, H2: {"peer_ok": False}}, {H1}, {}, {H1: ("hold", None), H2: ("normal", None)}),
    # a single host fleet: hold
    ({H1: {}}, {H1}, {}, {H1: ("hold", None)}),
])
def test_plan(fleet, listed, current, expected):
    assert reroute_plan_lib.plan(fleet, listed, current) == expected


def test_steps_admit_before_relay_and_unadmit_after():
    cur = {H1: ("relay", H3)}
    want = {H1: ("relay", H2), H2: ("normal", None), H3: ("hold", None)}
    assert reroute_plan_lib.steps(want, cur) == [("admit", H1, H2), ("relay", H1, H2), ("hold", H3, None), ("unadmit", H1, H3)]
    assert reroute_plan_lib.steps({H1: ("normal", None)}, {H1: ("relay", H2)}) == [("normal", H1, None), ("unadmit", H1, H2)]
    assert reroute_plan_lib.steps({H1: ("normal", None)}, {}) == []
    assert reroute_plan_lib.steps({H1: ("hold", None)}, {H1: ("hold", None)}) == []
    # the ledger's admissions: an existing one is not redone, a stale one is withdrawn
    assert reroute_plan_lib.steps({H1: ("relay", H2)}, {H1: ("relay", H2)}, {H1: H2}) == []
    assert reroute_plan_lib.steps({H1: ("relay", H2)}, {H1: ("normal", None)}, {H1: H2}) == [("relay", H1, H2)]
    assert reroute_plan_lib.steps({H1: ("normal", None)}, {H1: ("normal", None)}, {H1: H2}) == [("unadmit", H1, H2)]
    assert reroute_plan_lib.steps({H1: ("relay", H3)}, {H1: ("relay", H2)}, {H1: H2}) == [
        ("admit", H1, H3), ("relay", H1, H3), ("unadmit", H1, H2)]


@pytest.mark.parametrize("ip,rh,adm", [("198.18.0.12", "[198.18.0.12]:25", "198.18.0.12/32"),
                                        ("2001:db8::12", "[ipv6:2001:db8::12]:25", "[2001:db8::12]/128")])
def test_postfix_syntax(ip, rh, adm):
    assert ob.relayhost(ip) == rh and ob.admit_entry(ip) == adm


# --- the ledger and the pillar it gives ---------------------------------------------------------

CONF = dict(ob.DEFAULTS)
T0 = 1_800_000_000.0


def test_ledger_episodes_and_pillar(tmp_path):
    st = ob.Store(tmp_path / "ledger.sqlite")
    listed = {"ip": "198.18.0.11", "zone": "dnsbl.lab.test", "state": "listed", "codes": ["127.0.0.2"], "why": "x"}
    assert st.record(H1, listed, T0)
    assert not st.record(H1, listed, T0 + 1)              # already open: nothing new
    assert st.listed_hosts() == {H1}
    st.set_admit(H1, H2, ["198.18.0.11", "2001:db8::11"], T0, "listed")
    # admitted on the peer, but the host itself not relaying yet
    rows = st.rows()
    assert ob.outbound_pillar(H1, rows, T0, CONF) == {"mode": "normal", "admit": [], "since": T0, "reason": "listed"}
    assert ob.outbound_pillar(H2, rows, T0, CONF) == {"mode": "normal", "admit": ["198.18.0.11/32", "[2001:db8::11]/128"]}
    st.set_mode(H1, "relay", H2, "[198.18.0.12]:25", T0 + 2, "listed")
    p = ob.outbound_pillar(H1, st.rows(), T0 + 3, CONF)
    assert (p["mode"], p["relayhost"], p["peer"]) == ("relay", "[198.18.0.12]:25", H2)
    assert "queue_lifetime" not in p
    st.close()
    # a restarted master reads the same
    st = ob.Store(tmp_path / "ledger.sqlite")
    assert st.current() == {H1: ("relay", H2)}
    assert oct((tmp_path / "ledger.sqlite").stat().st_mode & 0o777) == "0o600"
    cleared = dict(listed, state="cleared")
    assert st.record(H1, cleared, T0 + 10) and st.listed_hosts() == set()
    assert not st.record(H1, cleared, T0 + 11)
    st.close()


def test_hold_extends_queue_lifetime_and_keeps_it_for_the_grace(tmp_path):
    st = ob.Store(tmp_path / "l.sqlite")
    st.set_mode(H1, "hold", None, None, T0, "listed, no clean peer")
    p = ob.outbound_pillar(H1, st.rows(), T0 + 5, CONF)
    assert (p["mode"], p["queue_lifetime"]) == ("hold", "100d")
    assert st.rows()[0]["held_since"] == T0
    st.set_mode(H1, "normal", None, None, T0 + 100, "cleared")
    assert ob.outbound_pillar(H1, st.rows(), T0 + 100 + CONF["grace"] - 1, CONF)["queue_lifetime"] == "100d"
    assert "queue_lifetime" not in ob.outbound_pillar(H1, st.rows(), T0 + 100 + CONF["grace"] + 1, CONF)
    st.close()


# --- the reactor and the template -------------------------------------------------------------

@pytest.mark.parametrize("bad", HOSTILE)
def test_dnsbl_reaction_passes_hostile_text_as_data(bad):
    data = {"id": bad, "data": {"host": bad, "transitions": [{"ip": bad, "zone": bad, "state": bad}]}}
    high = render("dnsbl.sls", data, tag="mailfleet/dnsbl/transition")
    assert list(high) == ["mailfleet_dnsbl_transition"]
    (fun, args), = high["mailfleet_dnsbl_transition"].items()
    assert fun == "runner.mailfleet_reroute.dnsbl"
    assert {k: v for d in args[0]["args"] for k, v in d.items()} == {"minion": bad, "payload": data["data"]}


BLOCK = (Path(__file__).resolve().parents[2] / "salt/mail/files/postfix-main.cf.jinja").read_text()
BLOCK = BLOCK[BLOCK.index("{#- >>> mailfleet outbound mode"):BLOCK.index("{#- <<< mailfleet outbound mode <<< #}")]


def render_block(pillar, main=None):
    env = jinja2.Environment(extensions=["jinja2.ext.do"])
    env.filters["unique"] = lambda xs: list(dict.fromkeys(xs))

    def _raise(msg):
        raise RuntimeError(msg)
    main = dict(main or {"mynetworks": "127.0.0.0/8 [::1]/128"})
    env.from_string(BLOCK + "{{ '' }}").render(**{"pillar": pillar, "main": main, "raise": _raise})
    return main


def test_main_cf_block():
    base = {"mynetworks": "127.0.0.0/8 [::1]/128"}
    assert render_block({}) == base
    assert render_block({"mailfleet_outbound": {"mode": "normal", "admit": []}}) == base
    assert render_block({"mailfleet_outbound": {"mode": "relay", "relayhost": "[198.18.0.12]:25", "admit": []}}) == \
        dict(base, relayhost="[198.18.0.12]:25")
    held = render_block({"mailfleet_outbound": {"mode": "hold", "queue_lifetime": "100d", "admit": []}})
    assert held.pop("default_transport").startswith("retry:4.7.1 Outbound mail held by mailfleet")
    assert held == dict(base, maximal_queue_lifetime="100d", bounce_queue_lifetime="100d")
    peer = render_block({"mailfleet_outbound": {"mode": "normal", "admit": ["198.18.0.11/32", "[2001:db8::11]/128"]}})
    assert peer["mynetworks"] == "127.0.0.0/8 [::1]/128 198.18.0.11/32 [2001:db8::11]/128"
    with pytest.raises(RuntimeError, match="pillar mailfleet_outbound: outbound mode unavailable"):
        render_block({"mailfleet_outbound": {"error": "outbound mode unavailable"}})


# --- the ext_pillar that hands the ledger's mode to each host ---------------------------------

def test_ext_pillar_hands_each_host_its_mode(tmp_path, monkeypatch):
    import time as _time

    import mailfleet_bans as xp
    path = tmp_path / "ledger.sqlite"
    monkeypatch.setattr(xp, "__opts__", {"mailfleet_ledger": str(path), "cachedir": str(tmp_path)}, raising=False)
    # no ledger yet: everyone normal
    assert xp.ext_pillar(H1, {})["mailfleet_outbound"] == {"mode": "normal", "admit": []}
    st = ob.Store(path)
    now = _time.time()
    st.set_admit(H1, H2, ["198.18.0.11"], now, "listed")
    st.set_mode(H1, "relay", H2, "[198.18.0.12]:25", now, "listed")
    st.set_mode(H3, "hold", None, None, now, "listed, no peer")
    st.close()
    p1 = xp.ext_pillar(H1, {})["mailfleet_outbound"]
    assert (p1["mode"], p1["relayhost"], p1["admit"]) == ("relay", "[198.18.0.12]:25", [])
    assert xp.ext_pillar(H2, {})["mailfleet_outbound"]["admit"] == ["198.18.0.11/32"]
    p3 = xp.ext_pillar(H3, {})["mailfleet_outbound"]
    assert (p3["mode"], p3["queue_lifetime"]) == ("hold", "100d")
    assert "active" in xp.ext_pillar(H1, {})["mailfleet_bans"]   # the ban part is untouched


def test_check_alerts_on_a_hold_older_than_a_day(tmp_path, monkeypatch):
    import time as _time
    monkeypatch.setattr(ob, "__opts__", {"mailfleet_ledger": str(tmp_path / "l.sqlite"), "cachedir": str(tmp_path)},
                        raising=False)
    sent = []
    monkeypatch.setattr(ob, "_alert", lambda *a, **k: sent.append(a))
    st = ob.Store(tmp_path / "l.sqlite")
    now = _time.time()
    st.set_mode(H1, "hold", None, None, now - 25 * 3600, "listed, no clean peer")
    st.set_mode(H2, "hold", None, None, now - 3600, "listed, no clean peer")
    st.close()
    assert ob.check() == {"held": [H1]}
    (kind, subject, message, details, severity), = sent
    assert (kind, subject, severity) == ("outbound_held", H1, "critical") and "held for 25 h" in message


def test_dnsbl_refuses_a_forged_event_and_an_unknown_host(tmp_path, monkeypatch):
    """The runner's entry point with the master's minion cache replaced by a dict (the real
    cache needs a master: tests/lab/test_55_dnsbl.py runs the whole path)."""
    monkeypatch.setattr(ob, "__opts__", {"mailfleet_ledger": str(tmp_path / "l.sqlite"), "cachedir": str(tmp_path)},
                        raising=False)
    fleet = {H1: ({"ipv4": ["198.18.0.11", "127.0.0.1"]}, {"mailfleet": {}}),
             H2: ({"ipv4": ["198.18.0.12"]}, {"mailfleet": {}})}
    monkeypatch.setattr(ob, "_fleet_data", lambda: fleet)
    fired = []
    monkeypatch.setattr(ob, "_fire", lambda tag, data: fired.append((tag, data)))
    monkeypatch.setattr(ob, "_alert", lambda *a, **k: None)
    opts = ob.__opts__
    forged = ev({"ip": "198.18.0.12", "state": "listed"}, host=H2)
    # mail01 reporting a listing of mail02 (its own key, mail02's name)
    assert "no valid key" in ob.dnsbl(minion=H2, payload=signed(opts, TAG, forged, signer=H1))["refused"]
    assert "unsigned" in ob.dnsbl(minion=H2, payload=forged)["refused"]
    intruder = dict(forged, host="intruder")
    assert "not a known mail host" in ob.dnsbl(minion="intruder", payload=signed(opts, TAG, intruder))["refused"]
    assert [t for t, _ in fired] == ["mailfleet/outbound/refused"] * 3
    # mail01 naming mail02's address: that transition is refused, nothing recorded or applied
    ret = ob.dnsbl(minion=H1, payload=signed(opts, TAG, ev({"ip": "198.18.0.12", "state": "listed"})))
    assert ret["changed"] == [] and ret["steps"] == [] and "not an address of" in ret["refused"][0][1]


def test_decisions_are_serialised_across_threads_by_a_file_lock(tmp_path):
    """Each reactor job loads the runner afresh, so the lock must live outside the module."""
    import threading
    import time as _time
    path = str(tmp_path / "ledger.sqlite")
    inside, overlap = [], []

    def job():
        with ob._Lock(path):
            if inside:
                overlap.append(True)
            inside.append(1)
            _time.sleep(0.2)
            inside.pop()
    threads = [threading.Thread(target=job) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not overlap
