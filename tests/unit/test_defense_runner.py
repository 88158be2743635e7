"""The ban decisions of the mailfleet_defense runner, as pure functions, and its ledger."""
import ipaddress
import time

import pytest

import mailfleet_ban_sets as ban
import mailfleet_ban_policy as bp
import mailfleet_ban_ledger as bl
import mailfleet_defense as d

POL = bp.policy()
HOST = "mail01.lab.test"


def report(*ips, host=HOST, **extra):
    return {"host": host, "offenders": [{"ip": ip, "rules": {"relay": 3}} for ip in ips], **extra}


# --- validation ------------------------------------------------------------------------------

def test_valid_report_normalises_addresses():
    offenders, refused = bp.check_report(report("198.19.0.5", "::ffff:198.19.0.6", "2001:DB8::1"), HOST, POL)
    assert [a for a, _r in offenders] == ["198.19.0.5", "198.19.0.6", "2001:db8::1"]
    assert offenders[0][1] == {"relay": 3}
    assert refused == []


@pytest.mark.parametrize("bad", ["not-an-ip", "198.19.0.256", "", None, 12, "127.0.0.1", "::1",
                                 "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.19.0.0/16",
                                 "1.2.3.4; nft flush ruleset", "x" * 500])
def test_invalid_addresses_are_refused_one_by_one(bad):
    offenders, refused = bp.check_report(report(bad, "198.19.0.7"), HOST, POL)
    assert [a for a, _r in offenders] == ["198.19.0.7"]
    assert len(refused) == 1


def test_forged_host_is_refused():
    with pytest.raises(bp.Refused, match="sent by 'mail02.lab.test'"):
        bp.check_report(report("198.19.0.5"), "mail02.lab.test", POL)
    with pytest.raises(bp.Refused):
        bp.check_report(report("198.19.0.5", host=None), HOST, POL)
    with pytest.raises(bp.Refused):
        bp.check_report(report("198.19.0.5"), None, POL)


@pytest.mark.parametrize("payload", [None, [], "x", {"host": HOST, "offenders": "198.19.0.5"}])
def test_malformed_reports_are_refused(payload):
    with pytest.raises(bp.Refused):
        bp.check_report(payload, HOST, POL)


def test_size_bounds():
    pol = bp.policy({"max_offenders": 10})
    with pytest.raises(bp.Refused, match="max 10"):
        bp.check_report(report(*[f"198.19.0.{i}" for i in range(11)]), HOST, pol)
    with pytest.raises(bp.Refused, match="too large"):
        bp.check_report(report("198.19.0.1", junk="x" * (3 << 20)), HOST, POL)


def test_bad_rules_values_are_dropped_from_reason():
    payload = {"host": HOST, "offenders": [{"ip": "198.19.0.1", "rules": {"relay": "lots", "auth": 12, "x": True}}]}
    (addr, reason), = bp.check_report(payload, HOST, POL)[0]
    assert reason == {"auth": 12}


def test_policy_rejects_unknown_and_bad_settings():
    with pytest.raises(ValueError):
        bp.policy({"nope": 1})
    with pytest.raises(ValueError):
        bp.policy({"rate": 0})
    assert bp.policy({"ban_timeout": {"base": 60}})["ban_timeout"] == {**bp.DEFAULTS["ban_timeout"], "base": 60}


# --- allow-list ------------------------------------------------------------------------------

def test_allow_list():
    nets = bp.allow_networks(["198.18.0.11", "198.18.0.12", "198.18.0.1", "10.9.0.0/16", "2001:db8:1::/48", "junk"])
    assert bp.allowed("198.18.0.11", nets)
    assert bp.allowed("10.9.8.7", nets)
    assert bp.allowed("2001:db8:1::5", nets)
    assert bp.allowed("127.0.0.5", nets)
    assert not bp.allowed("198.19.0.5", nets)
    assert not bp.allowed("2001:db8:2::5", nets)


# --- decisions against a ledger ------------------------------------------------------------------

@pytest.fixture
def ledger(tmp_path):
    led = bl.Ledger(tmp_path / "ledger.sqlite")
    yield led
    led.close()


def test_decide_skips_allow_listed_and_already_banned(ledger):
    nets = bp.allow_networks(["198.18.0.0/24"])
    now = 1_000_000.0
    bans, skipped = bp.decide([("198.18.0.11", {}), ("198.19.0.5", {"relay": 3})], HOST, now, POL, nets, ledger)
    assert [b["address"] for b in bans] == ["198.19.0.5"]
    assert skipped == [("198.18.0.11", "allow-listed")]
    assert bans[0]["timeout"] == 600 and bans[0]["expires"] == now + 600 and bans[0]["not_before"] == now
    ledger.insert(bans)
    bans2, skipped2 = bp.decide([("198.19.0.5", {})], "mail02.lab.test", now + 5, POL, nets, ledger)
    assert bans2 == [] and skipped2 == [("198.19.0.5", "already banned")]


def test_escalation_doubles_up_to_the_cap(ledger):
    pol = bp.policy({"ban_timeout": {"base": 600, "factor": 2, "max": 3000}})
    now, seen = 1_000_000.0, []
    for _ in range(5):
        bans, _s = bp.decide([("198.19.0.9", {})], HOST, now, pol, [], ledger)
        ledger.insert(bans)
        seen.append(bans[0]["timeout"])
        now = bans[0]["expires"] + 1  # banned again after the previous ban ran out
    assert seen == [600, 1200, 2400, 3000, 3000]
    assert [bp.escalate(n, POL) for n in range(10)][-1] == 86400


def test_escalation_forgets_after_memory(ledger):
    now = 1_000_000.0
    ledger.insert(bp.decide([("198.19.0.9", {})], HOST, now, POL, [], ledger)[0])
    later = now + POL["ban_timeout"]["memory"] + 10
    bans, _ = bp.decide([("198.19.0.9", {})], HOST, later, POL, [], ledger)
    assert bans[0]["timeout"] == 600


def test_schedule_caps_rate_without_dropping():
    t = bp.schedule([], 2500, 100.0, rate=1000, period=60)
    assert len(t) == 2500
    assert t[:1000] == [100.0] * 1000 and t[1000:2000] == [160.0] * 1000 and t[2000:] == [220.0] * 500
    # every 60 s window holds at most 1000
    for start in set(t):
        assert sum(1 for x in t if start <= x < start + 60) <= 1000
    # earlier bans of the same reporter count
    assert bp.schedule([90.0] * 999, 3, 100.0, rate=1000, period=60) == [100.0, 150.0, 150.0]


def test_rate_cap_per_reporter_through_the_ledger(ledger):
    pol = bp.policy({"rate": 10})
    now = 1_000_000.0
    ips = [(f"198.19.1.{i}", {}) for i in range(25)]
    bans, _ = bp.decide(ips, HOST, now, pol, [], ledger)
    ledger.insert(bans)
    assert sorted({b["not_before"] for b in bans}) == [now, now + 60, now + 120]
    assert len(ledger.due(now)) == 10 and ledger.queued(now) == 15
    ledger.mark_applied([i for i, _a, _l in ledger.due(now)], now)
    assert ledger.due(now + 1) == []
    assert len(ledger.due(now + 60)) == 10
    # another reporter has its own budget
    other, _ = bp.decide([("198.19.2.1", {})], "mail02.lab.test", now, pol, [], ledger)
    assert other[0]["not_before"] == now
    # a queued address is not banned twice
    again, skipped = bp.decide([("198.19.1.24", {})], HOST, now + 1, pol, [], ledger)
    assert again == [] and skipped == [("198.19.1.24", "already banned")]
    # queued bans keep their whole timeout from their turn
    last = [b for b in bans if b["address"] == "198.19.1.24"][0]
    assert last["expires"] == now + 120 + 600


def test_ledger_survives_reopen_and_unban(tmp_path):
    path = tmp_path / "sub" / "ledger.sqlite"
    now = 1_000_000.0
    led = bl.Ledger(path)
    with led:
        led.insert(bp.decide([("198.19.0.5", {"relay": 3}), ("2001:db8::7", {})], HOST, now, POL, [], led)[0])
    led.close()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    led = bl.Ledger(path)
    assert led.active(now + 1) == {"198.19.0.5": now + 600, "2001:db8::7": now + 600}
    rows = led.rows(now + 1)
    assert rows[0]["reporter"] == HOST and rows[0]["reason"] == '{"relay": 3}' and rows[1]["family"] == 6
    assert led.revoke("198.19.0.5", now + 2, "runner") == 1
    assert led.active(now + 3) == {"2001:db8::7": now + 600}
    assert led.revoked_since(now, now + 3) == ["198.19.0.5"]
    assert led.active(now + 601) == {}
    led.close()


def test_failed_transaction_rolls_back(ledger):
    now = 1_000_000.0
    with pytest.raises(RuntimeError):
        with ledger:
            ledger.insert(bp.decide([("198.19.0.5", {})], HOST, now, POL, [], ledger)[0])
            raise RuntimeError("boom")
    assert ledger.active(now) == {}


# --- the minion side: nft scripts and reconciliation plans --------------------------------------

def test_element_script_one_statement_per_set():
    items, bad = ban.items({"198.19.0.5": 600, "2001:db8::1": 30, "::ffff:198.19.0.6": 600, "nope": 5}, None)
    assert bad and "nope" in bad[0]
    script = ban.element_script(items)
    assert script == ("add element inet mailfleet banned_v4 { 198.19.0.5 timeout 600s, 198.19.0.6 timeout 600s }\n"
                      "add element inet mailfleet banned_v6 { 2001:db8::1 timeout 30s }\n")
    assert ban.element_script(items, "delete").startswith("delete element inet mailfleet banned_v4 { 198.19.0.5, ")


@pytest.mark.parametrize("t", [0, -1, True, 10 ** 9, "x"])
def test_module_refuses_bad_timeouts(t):
    items, bad = ban.items(["198.19.0.5"], t)
    assert items == {} and bad


def test_reconcile_plan():
    now = 1000.0
    ledger = {"active": {"198.19.0.1": now + 600, "198.19.0.2": now + 600, "198.19.0.3": now + 0.5,
                         "198.19.0.4": now + 600},
              "revoked": ["198.19.0.9", "198.19.0.8"]}
    present = {"198.19.0.2": 598, "198.19.0.4": 100, "198.19.0.9": 50, "198.19.0.77": 30}
    add_, remove_ = ban.plan(ledger, present, now)
    assert add_ == {"198.19.0.1": 600, "198.19.0.4": 600}
    assert remove_ == ["198.19.0.9"]  # 198.19.0.77 is not the ledger's to remove


def test_parse_listing():
    doc = {"nftables": [{"metainfo": {}}, {"set": {"name": "banned_v4", "elem": [
        {"elem": {"val": "198.19.0.5", "timeout": 600, "expires": 590}}, "198.19.0.6"]}}]}
    assert ban.parse_listing(doc) == {"198.19.0.5": 590, "198.19.0.6": None}


def test_minion_entries_from_cached_grains_and_pillar():
    grains = {"ipv4": ["127.0.0.1", "198.18.0.11"], "ipv6": ["::1", "fe80::1"]}
    pillar = {"mailfleet": {"host": {"mynetworks_extra": ["192.0.2.0/24"]}, "defense": {"allow": ["198.18.0.100"]}}}
    entries = bp.minion_entries(grains, pillar)
    assert entries == {"addresses": ["127.0.0.1", "198.18.0.11", "::1", "fe80::1"],
                       "networks": ["192.0.2.0/24", "198.18.0.100"]}
    nets = bp.allow_networks(entries["networks"], entries["addresses"])
    assert all(bp.allowed(a, nets) for a in ("198.18.0.11", "192.0.2.77", "198.18.0.100", "::ffff:198.18.0.11"))
    assert bp.minion_entries(None, None) == {"addresses": [], "networks": []}


# --- bounds (issue 13, finding 7) --------------------------------------------------------------

def test_a_flood_of_bans_from_one_host_is_bounded_and_the_excess_refused(ledger):
    pol = bp.policy({"rate": 10, "period": 60, "max_queued_per_reporter": 50, "max_queued": 80})
    now = 1_000_000.0
    flood = [(f"198.19.{i // 250}.{i % 250 + 1}", {"relay": 3}) for i in range(200)]
    bans, skipped = bp.decide(flood, HOST, now, pol, [], ledger)
    ledger.insert(bans)
    assert len(bans) == 10 + 50  # the rate's worth now, then at most 50 waiting
    assert [why for _a, why in skipped].count("ban queue full for this reporter") == 140
    # another host's bans still find room, up to the total
    other = [(f"198.18.{i // 250 + 10}.{i % 250 + 1}", {"relay": 3}) for i in range(100)]
    bans2, skipped2 = bp.decide(other, "mail02.lab.test", now, pol, [], ledger)
    ledger.insert(bans2)
    assert len(bans2) == 10 + 30 and [w for _a, w in skipped2].count("ban queue full") == 60  # 80 - 50 queued


def test_expired_ban_rows_are_pruned_after_the_memory(ledger):
    now = 1_000_000.0
    pol = bp.policy({})
    bans, _ = bp.decide([("198.19.0.5", {"relay": 3})], HOST, now, pol, [], ledger)
    ledger.insert(bans)
    memory = pol["ban_timeout"]["memory"]
    assert ledger.prune(now + 600 + memory - 1) == 0
    assert ledger.prune(now + 600 + memory + 1) == 1
    assert ledger.rows(now, include_all=True) == []


def test_forgetting_an_isolated_reporter_drops_its_queue_and_on_request_lifts_its_bans(tmp_path, monkeypatch):
    # mail02 flooded the ledger before the postmaster isolated it: what still waits its turn is
    # the claim of a host no longer trusted and is dropped; the bans in force are lifted on
    # every host only when asked (unban=True), and never one another host reported too.
    opts = {"mailfleet_ledger": str(tmp_path / "ledger.sqlite"), "cachedir": str(tmp_path)}
    monkeypatch.setattr(d, "__opts__", opts, raising=False)
    sent = []
    monkeypatch.setattr(d, "_send", lambda pol, items, fun="mailfleet_ban.add": sent.append((fun, sorted(items))) or "j")
    monkeypatch.setattr(d, "_policy", lambda: bp.policy({"rate": 2, "period": 60}))
    now = time.time()
    led = bl.Ledger(opts["mailfleet_ledger"])
    pol = bp.policy({"rate": 2, "period": 60})
    with led:
        bans, _ = bp.decide([(f"198.19.9.{i}", {"relay": 3}) for i in range(1, 6)], "mail02.lab.test", now, pol, [], led)
        led.insert(bans)
        both, _ = bp.decide([("198.19.9.1", {"relay": 3})], HOST, now, pol, [], led)
        assert both == []                      # already banned: mail01's own report of it
        led.insert(bp.decide([("198.19.8.1", {"relay": 3})], HOST, now, pol, [], led)[0])
        led.db.execute("INSERT INTO bans(address, family, reporter, reason, created, not_before, timeout,"
                       " expires, level) VALUES ('198.19.9.1', 4, ?, '{}', ?, ?, 600, ?, 0)", (HOST, now, now, now + 600))
    led.close()
    ret = d.forget_reporter("mail02.lab.test")
    assert ret == {"host": "mail02.lab.test", "dropped": 3, "lifted": 0, "first": [], "jid": None}
    assert sent == []
    ret = d.forget_reporter("mail02.lab.test", unban=True)
    assert ret["dropped"] == 0 and ret["first"] == ["198.19.9.2"]  # 198.19.9.1: mail01 banned it too
    assert sent == [("mailfleet_ban.remove", ["198.19.9.2"])]
    led = bl.Ledger(opts["mailfleet_ledger"])
    try:
        assert set(led.active(time.time())) == {"198.19.9.1", "198.19.8.1"}
        assert led.queued(time.time()) == 0
        # restored later, its rate starts from what took effect, not from the dropped queue
        again, _ = bp.decide([("198.19.7.1", {"relay": 3})], "mail02.lab.test", now + 61, pol, [], led)
        assert [b["not_before"] for b in again] == [now + 61]
    finally:
        led.close()


def test_bans_are_published_outside_the_ledgers_write_transaction_and_a_failed_publish_is_retried(tmp_path, monkeypatch):
    # While the master publishes a ban to every host, another ledger writer (a hold, an unban)
    # must not wait on it; a publish that fails leaves the ban queued, and the next drain sends it.
    import sqlite3

    from signing import signed
    opts = {"mailfleet_ledger": str(tmp_path / "ledger.sqlite"), "cachedir": str(tmp_path)}
    monkeypatch.setattr(d, "__opts__", opts, raising=False)
    monkeypatch.setattr(d, "__salt__", {}, raising=False)
    monkeypatch.setattr(d, "_fleet_allow", lambda pol: [])
    monkeypatch.setattr(d, "_alert", lambda *a, **k: None, raising=False)
    sent, fail = [], [True]

    def send(pol, items, fun="mailfleet_ban.add"):
        other = sqlite3.connect(opts["mailfleet_ledger"], timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")  # raises "database is locked" inside a write transaction
            other.rollback()
        finally:
            other.close()
        if fail[0]:
            fail[0] = False
            raise ConnectionError("master publish failed")
        sent.append(sorted(items))
        return "20261208000000000001"
    monkeypatch.setattr(d, "_send", send)
    ret = d.report(HOST, signed(opts, d.REPORT_TAG, report("198.19.5.5")))
    assert sent == [] and "198.19.5.5" in str(ret)
    led = bl.Ledger(opts["mailfleet_ledger"])
    try:
        assert [a for _i, a, _l in led.due(time.time())] == ["198.19.5.5"]  # not published: still due
    finally:
        led.close()
    assert d.drain()["sent"] == 1 and sent == [["198.19.5.5"]]
    assert d.drain()["sent"] == 0
