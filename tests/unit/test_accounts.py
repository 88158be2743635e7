"""Compromised accounts and the queue (issue 6): the runner's decisions (mailfleet_accounts:
untrusted outbound entries, hold -> refuse -> release, the ledger on a real sqlite file, the
ext_pillar's view of it), the report path in mailfleet_defense (accounts before addresses),
the host side's pure parts (mailfleet_sasl_hold: map text, what is held and released) and
the queue module (mailfleet_postqueue: postqueue -j parsing, bounds, thresholds, transitions),
with a real subprocess standing in for postqueue only where the bound is what is tested."""
import json
import os
import sqlite3
import sys

import pytest

import mailfleet_account_policy as account_policy_lib
import mailfleet_accounts as acc
import mailfleet_bans as ext
import mailfleet_defense as d
import mailfleet_postqueue as mq
import mailfleet_sasl_hold as sh
import mailfleet_sasl_hold_plan as shp
from signing import signed

H1 = "mail01.lab.test"
TAG = "mailfleet/abuse/report"
ALICE = "alice@example-a.test"


def outbound_report(*users, host=H1, **extra):
    return {"host": host, "offenders": [], **extra,
            "outbound": [{"user": u, "messages": 250, "recipients": 600, "window": 3600,
                          "ips": ["198.18.0.100"]} for u in users]}


# --- runner: validation and decisions ----------------------------------------------------------

def test_outbound_entries_are_validated_one_by_one():
    rep = outbound_report(ALICE, "Bob@Example-B.test", "x y", "#comment", "a" * 101, "ok\nuser", "", None, ALICE,
                         "eve@x\n")
    rep["outbound"].append("not a mapping")
    users, refused = account_policy_lib.check_outbound(rep)
    assert [u for u, _i in users] == [ALICE, "bob@example-b.test"]  # lower-cased, deduplicated
    assert users[0][1] == {"messages": 250, "recipients": 600, "window": 3600, "ips": ["198.18.0.100"]}
    assert len(refused) == 8


def test_outbound_counts_that_are_not_numbers_become_zero_and_size_is_bounded():
    rep = {"host": H1, "outbound": [{"user": ALICE, "messages": "9; rm -rf /", "recipients": True,
                                     "window": -1, "ips": "1.2.3.4"}]}
    (user, info), = account_policy_lib.check_outbound(rep)[0]
    assert info == {"messages": 0, "recipients": 0, "window": 0, "ips": []}
    users, refused = account_policy_lib.check_outbound({"outbound": [{"user": f"u{i}@x"} for i in range(account_policy_lib.MAX_USERS + 1)]})
    assert users == [] and "max" in refused[0][1]
    assert account_policy_lib.check_outbound({"outbound": "alice"}) == ([], [("outbound", "not a list")])


def test_decide_holds_first_then_refuses_a_user_that_keeps_sending():
    users = [(ALICE, {}), ("bob@example-b.test", {}), ("carol@example-a.test", {})]
    current = {"bob@example-b.test": "hold", "carol@example-a.test": "refuse"}
    assert account_policy_lib.decide(users, current) == [(ALICE, "hold", {}), ("bob@example-b.test", "refuse", {})]
    assert account_policy_lib.decide([], current) == []


def test_queue_part_is_validated():
    assert account_policy_lib.check_queue({"host": H1}) is None
    q = account_policy_lib.check_queue({"queue": {"state": "over", "deferred": 250, "oldest": 20000, "hold": 3,
                                   "thresholds": {"deferred": 200, "age": 14400}, "junk": "x" * 10}})
    assert q == {"state": "over", "deferred": 250, "oldest": 20000, "hold": 3, "truncated": False,
                 "thresholds": {"deferred": 200, "age": 14400}}
    for bad in ({"state": "boom"}, "over", {"deferred": 1}):
        with pytest.raises(ValueError):
            account_policy_lib.check_queue({"queue": bad})


# --- runner: ledger, alerts, release (the host push replaced by a recorder) --------------------

@pytest.fixture
def runner(tmp_path, monkeypatch):
    ledger = tmp_path / "ledger.sqlite"
    monkeypatch.setattr(acc, "__opts__", {"mailfleet_ledger": str(ledger), "cachedir": str(tmp_path)}, raising=False)
    pushed, alerted, seqs = [], [], []
    monkeypatch.setattr(acc, "_push", lambda holds, release=None, timeout=60, seq=None: (
        pushed.append((dict(holds), release)) or seqs.append(seq) or {H1: {"result": True, "changes": {}},
                                                  "mail02.lab.test": {"result": True, "changes": {}}}))
    monkeypatch.setattr(acc, "_alert", lambda kind, subject, message, details=None, severity="warning":
                        alerted.append((kind, subject, severity, details)))
    # what the master's domain data says each host serves (the minion data cache's pillar)
    served = {H1: {"example-a.test", "example-b.test"}, "mail02.lab.test": {"example-b.test"}}
    monkeypatch.setattr(acc, "_served_domains", lambda minion: served.get(minion), raising=False)
    return {"ledger": ledger, "pushed": pushed, "alerted": alerted, "served": served, "seqs": seqs}


def test_every_hold_map_pushed_carries_a_higher_sequence_number_than_the_last(runner, monkeypatch):
    monkeypatch.setattr(ext, "__opts__", {"mailfleet_ledger": str(runner["ledger"])}, raising=False)
    acc.outbound(H1, outbound_report(ALICE))
    acc.outbound(H1, outbound_report("bob@example-b.test"))
    acc.outbound(H1, outbound_report(ALICE))  # escalated to refuse
    acc.release(ALICE)
    assert runner["seqs"] == [1, 2, 3, 4]
    assert ext.ext_pillar(H1, {})["mailfleet_sasl_holds_seq"] == 4


@pytest.fixture
def host_map(tmp_path, monkeypatch):
    path = tmp_path / "mailfleet_sasl_hold"
    monkeypatch.setattr(sh, "map_path", lambda postfix_dir=None: str(path))
    monkeypatch.setattr(sh, "_postfix_dir", lambda: str(tmp_path))
    return path


def test_an_older_hold_map_arriving_last_is_ignored(host_map):
    """Two pushes in flight: the map that holds alice (5) lands, then the older one (4) that
    did not hold her yet. The host keeps holding her."""
    (host_map.parent / "mailfleet_sasl_hold.seq").write_text("5\n")
    ret = sh.sync(holds={}, seq=4, test=True)
    assert ret["changes"] == {} and "older" in ret["comment"]
    assert sh.sync(holds={}, seq=5, test=True)["comment"] == "would change"


def test_a_stale_sequence_number_does_not_block_a_ledger_started_afresh(host_map):
    seq = host_map.parent / "mailfleet_sasl_hold.seq"
    seq.write_text("900\n")
    old = seq.stat().st_mtime - sh.SEQ_MEMORY - 5
    os.utime(seq, (old, old))
    assert sh.sync(holds={}, seq=1, test=True)["comment"] == "would change"
    with pytest.raises(ValueError, match="seq"):
        sh.sync(holds={}, seq="3", test=True)


def test_a_host_cannot_hold_a_user_of_a_domain_it_does_not_serve(runner):
    ret = acc.outbound("mail02.lab.test", outbound_report(ALICE, "bob@example-b.test", host="mail02.lab.test"))
    assert ret["held"] == ["bob@example-b.test"]
    assert [i[0] for i in ret["invalid"]] == [ALICE] and "does not serve" in ret["invalid"][0][1]
    assert runner["pushed"][-1] == ({"bob@example-b.test": "hold"}, None)
    refused = [a for a in runner["alerted"] if a[0] == "report_refused"]
    assert refused and refused[0][1] == "mail02.lab.test" and ALICE in json.dumps(refused[0][3])


def test_a_host_whose_domains_the_master_does_not_know_holds_no_one(runner):
    ret = acc.outbound("mail09.lab.test", outbound_report(ALICE, host="mail09.lab.test"))
    assert ret["held"] == [] and not runner["pushed"]


def test_holds_per_reporter_are_capped_and_the_excess_is_refused_with_an_alert(runner, monkeypatch):
    monkeypatch.setitem(acc.__opts__, "mailfleet_accounts", {"max_holds_per_reporter": 3})
    users = [f"user{i}@example-a.test" for i in range(5)]
    ret = acc.outbound(H1, outbound_report(*users))
    assert ret["held"] == users[:3]
    assert sorted(i[0] for i in ret["invalid"]) == users[3:]
    assert [a for a in runner["alerted"] if a[0] == "report_refused" and a[1] == H1]
    # a user already held may still be escalated to refuse: the cap counts new holds only
    ret = acc.outbound(H1, outbound_report(users[0]))
    assert ret["refused"] == [users[0]]


def test_the_fleet_never_holds_more_users_than_a_host_map_takes(runner, monkeypatch):
    # Many reporters (or a postmaster's script) together: the ledger stops at the hosts' own
    # bound, refuses the rest with an alert, and every map pushed stays valid on the hosts.
    monkeypatch.setattr(shp, "MAX_USERS", 4)
    reporters = [f"mail{i:02d}.lab.test" for i in range(1, 4)]
    for host in reporters:
        runner["served"][host] = {"example-a.test"}
    held = []
    for n, host in enumerate(reporters):
        ret = acc.outbound(host, outbound_report(*[f"u{n}x{i}@example-a.test" for i in range(2)], host=host))
        held += ret["held"]
    assert len(held) == 4 and len(acc.holds()) == 4
    assert [a for a in runner["alerted"] if a[0] == "report_refused" and a[1] == reporters[2]]
    for holds, _ in runner["pushed"]:
        assert shp.check_holds(holds) == holds
    with pytest.raises(ValueError, match="holds in force"):
        acc.hold("bob@example-b.test")
    acc.hold(held[0], mode="refuse")  # escalating a user already held still works


def test_hold_refuse_release_recorded_pushed_and_alerted(runner):
    ret = acc.outbound(H1, outbound_report(ALICE))
    assert ret["held"] == [ALICE] and ret["refused"] == []
    assert runner["pushed"][-1] == ({ALICE: "hold"}, None)
    kind, subject, severity, details = runner["alerted"][-1]
    assert (kind, subject, severity) == ("account_held", ALICE, "critical")
    assert details["host"] == H1 and details["messages"] == 250 and details["mode"] == "hold"

    ret = acc.outbound(H1, outbound_report(ALICE))  # reported again while held
    assert ret["refused"] == [ALICE]
    assert runner["pushed"][-1] == ({ALICE: "refuse"}, None)
    assert runner["alerted"][-1][0] == "account_refused"
    n = len(runner["pushed"])
    acc.outbound(H1, outbound_report(ALICE))  # already refused: nothing more to do
    assert len(runner["pushed"]) == n

    rows = acc.holds()
    assert len(rows) == 1 and rows[0]["user"] == ALICE and rows[0]["mode"] == "refuse"
    assert rows[0]["reporter"] == H1 and rows[0]["reason"]["recipients"] == 600

    ret = acc.release("Alice@Example-A.test")
    assert ret["user"] == ALICE and ret["released"] == 1
    assert runner["pushed"][-1] == ({}, [ALICE])  # hold gone everywhere, its held mail released
    assert runner["alerted"][-1][0] == "account_released"
    assert acc.holds() == []
    (row,) = acc.holds(all=True)
    assert row["released_by"] == "runner" and row["released"]
    # a later crossing is a new episode
    acc.outbound(H1, outbound_report(ALICE))
    assert [r["mode"] for r in acc.holds(all=True)] == ["refuse", "hold"]


def test_the_postmaster_holds_an_account_by_hand_and_releases_it(runner):
    ret = acc.hold("Alice@Example-A.test", reason="ticket 4711")
    assert ret["changed"] and ret["mode"] == "hold" and runner["pushed"][-1] == ({ALICE: "hold"}, None)
    (row,) = acc.holds()
    assert row["reporter"] == "runner" and row["reason"]["reason"] == "ticket 4711"
    assert runner["alerted"][-1][:2] == ("account_held", ALICE)
    n = len(runner["pushed"])
    assert acc.hold(ALICE)["changed"] is False and len(runner["pushed"]) == n  # idempotent
    assert acc.hold(ALICE, mode="refuse")["changed"] and runner["pushed"][-1] == ({ALICE: "refuse"}, None)
    assert acc.hold(ALICE, mode="hold")["changed"] and acc.holds()[0]["mode"] == "hold"  # back to holding
    assert len(acc.holds(all=True)) == 1  # one episode throughout
    # a report while held by hand escalates it as usual
    assert acc.outbound(H1, outbound_report(ALICE))["refused"] == [ALICE]
    assert acc.release(ALICE)["released"] == 1 and acc.holds() == []
    with pytest.raises(ValueError, match="mode"):
        acc.hold(ALICE, mode="drop")
    with pytest.raises(ValueError):
        acc.hold("alice example")
    assert acc.holds() == []


def test_release_of_a_user_not_held_still_releases_on_the_hosts_and_checks_the_name(runner):
    ret = acc.release(ALICE)
    assert ret["released"] == 0 and runner["pushed"][-1] == ({}, [ALICE])
    assert not runner["alerted"]
    with pytest.raises(ValueError):
        acc.release("alice example")


def test_ledger_survives_reopening_and_the_ext_pillar_hands_the_holds(runner, monkeypatch):
    acc.outbound(H1, outbound_report(ALICE, "bob@example-b.test"))
    acc.outbound(H1, outbound_report("bob@example-b.test"))
    monkeypatch.setattr(ext, "__opts__", {"mailfleet_ledger": str(runner["ledger"]), "cachedir": "/nonexistent"},
                        raising=False)
    for minion in (H1, "mail02.lab.test"):  # fleet-wide
        assert ext.ext_pillar(minion, {})["mailfleet_sasl_holds"] == {ALICE: "hold", "bob@example-b.test": "refuse"}
    acc.release(ALICE)
    assert ext.ext_pillar(H1, {})["mailfleet_sasl_holds"] == {"bob@example-b.test": "refuse"}
    db = sqlite3.connect(runner["ledger"])
    assert acc.pillar_holds(db) == {"bob@example-b.test": "refuse"}


def test_ext_pillar_without_a_ledger_hands_no_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(ext, "__opts__", {"mailfleet_ledger": str(tmp_path / "none.sqlite"), "cachedir": str(tmp_path)},
                        raising=False)
    assert ext.ext_pillar(H1, {})["mailfleet_sasl_holds"] == {}


# --- mailfleet_defense.report: accounts before any address ----------------------------------------

def test_report_hands_outbound_and_queue_to_the_accounts_runner_before_bans(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(d, "__opts__", {"mailfleet_ledger": str(tmp_path / "l.sqlite"), "cachedir": str(tmp_path)},
                        raising=False)
    monkeypatch.setattr(d, "__salt__", {
        "mailfleet_accounts.outbound": lambda m, p: calls.append(("outbound", m)) or {"held": [ALICE]},
        "mailfleet_accounts.queue": lambda m, p: calls.append(("queue", m)) or {"state": "over"}}, raising=False)
    monkeypatch.setattr(d, "_fleet_allow", lambda pol: calls.append(("ips",)) or [])
    monkeypatch.setattr(d, "_send", lambda pol, items, fun="mailfleet_ban.add": "jid")
    monkeypatch.setattr(d, "_fire", lambda tag, data: None)
    payload = outbound_report(ALICE, queue={"state": "over"})
    payload["offenders"] = [{"ip": "198.19.0.5", "rules": {"relay": 3}}]
    ret = d.report(H1, signed(d.__opts__, TAG, payload))
    assert calls == [("outbound", H1), ("queue", H1), ("ips",)]
    assert ret["accounts"] == {"outbound": {"held": [ALICE]}, "queue": {"state": "over"}}
    assert ret["banned"] == ["198.19.0.5"]
    # mail02 reporting for mail01 is refused before the accounts runner sees anything
    calls.clear()
    assert "no valid key" in d.report("mail02.lab.test", signed(d.__opts__, TAG, payload, "mail02.lab.test"))["refused"]
    assert "unsigned" in d.report(H1, payload)["refused"]
    assert calls == []


def test_report_ban_path_survives_a_failing_accounts_runner(tmp_path, monkeypatch):
    monkeypatch.setattr(d, "__opts__", {"mailfleet_ledger": str(tmp_path / "l.sqlite"), "cachedir": str(tmp_path)},
                        raising=False)

    def boom(m, p):
        raise RuntimeError("no minions")
    monkeypatch.setattr(d, "__salt__", {"mailfleet_accounts.outbound": boom}, raising=False)
    monkeypatch.setattr(d, "_fleet_allow", lambda pol: [])
    monkeypatch.setattr(d, "_send", lambda pol, items, fun="mailfleet_ban.add": "jid")
    payload = outbound_report(ALICE)
    payload["offenders"] = [{"ip": "198.19.0.6", "rules": {"relay": 3}}]
    assert d.report(H1, signed(d.__opts__, TAG, payload))["banned"] == ["198.19.0.6"]


# --- host side: the map and what is held / released ------------------------------------------

def test_map_text_round_trips_and_is_stable():
    holds = {"bob@example-b.test": "refuse", ALICE: "hold"}
    text = shp.render_map(holds)
    assert text.splitlines()[1:] == [f"{ALICE}\tHOLD", f"bob@example-b.test\t{shp.REFUSE_TEXT}"]
    assert shp.REFUSE_TEXT.startswith("450 4.7.1 ")  # deferred by the client, never a bounce
    assert shp.parse_map(text) == holds and shp.render_map(dict(reversed(list(holds.items())))) == text


@pytest.mark.parametrize("bad", [{"a b": "hold"}, {ALICE: "bounce"}, {"#x": "hold"}, ["alice"], {"x\n": "hold"}])
def test_bad_holds_pillar_names_the_key(bad):
    with pytest.raises(ValueError, match="mailfleet_sasl_holds"):
        shp.check_holds(bad)


QUEUE = [
    {"queue_name": "deferred", "queue_id": "A1", "arrival_time": 1000, "sender": "Alice@example-a.test"},
    {"queue_name": "active", "queue_id": "A2", "arrival_time": 1100, "sender": ALICE},
    {"queue_name": "hold", "queue_id": "A3", "arrival_time": 1200, "sender": ALICE},
    {"queue_name": "deferred", "queue_id": "B1", "arrival_time": 900, "sender": "bob@example-b.test"},
    {"queue_name": "hold", "queue_id": "B2", "arrival_time": 1300, "sender": "bob@example-b.test"},
    {"queue_name": "incoming", "queue_id": "C1", "arrival_time": 1400, "sender": ""},
]


def test_plan_holds_a_held_users_queued_mail_and_releases_a_released_users_held_mail():
    p = shp.plan({ALICE: "hold"}, {}, QUEUE, now=1500)
    assert p == {"map": True, "hold_ids": ["A1", "A2"], "release_ids": [], "requeue_ids": [], "released": []}
    # bob was in the map and is no longer: his held mail goes (level-triggered release)
    p = shp.plan({ALICE: "refuse"}, {ALICE: "hold", "bob@example-b.test": "hold"}, QUEUE, now=1500)
    assert p["map"] and p["release_ids"] == ["B2"] and p["hold_ids"] == ["A1", "A2"]
    # explicit release of a user already gone from the map
    p = shp.plan({}, {}, QUEUE, release=[ALICE], now=1500)
    assert p == {"map": False, "hold_ids": [], "release_ids": ["A3"], "requeue_ids": [], "released": [ALICE]}
    # a user held again is never released by a stale release request
    assert shp.plan({ALICE: "hold"}, {ALICE: "hold"}, QUEUE, release=[ALICE])["release_ids"] == []


ALIAS_QUEUE = [
    {"queue_name": "hold", "queue_id": "H1", "arrival_time": 10_000, "sender": "info@example-a.test"},
    {"queue_name": "hold", "queue_id": "H2", "arrival_time": 10_000, "sender": ALICE},
    {"queue_name": "hold", "queue_id": "H3", "arrival_time": 10_000, "sender": "info@example-a.test"},
    {"queue_name": "deferred", "queue_id": "D1", "arrival_time": 10_000, "sender": "sales@example-a.test"},
]
# what postcat shows as named_attribute sasl_username= in each queue file ("" = not submitted)
LOGINS = {"H1": ALICE, "H2": ALICE, "H3": "carol@example-a.test", "D1": ALICE}


def test_mail_a_held_user_sent_under_an_alias_is_held_and_released_by_her_login():
    p = shp.plan({ALICE: "hold"}, {}, ALIAS_QUEUE, logins=LOGINS, now=10_060)
    assert p["hold_ids"] == ["D1"]  # queued as sales@, submitted by alice
    p = shp.plan({}, {ALICE: "hold"}, ALIAS_QUEUE, release=[ALICE], logins=LOGINS, now=10_060)
    assert p["release_ids"] == ["H1", "H2"] and p["requeue_ids"] == []  # H3 is carol's


def test_mail_held_for_long_is_requeued_on_release_so_it_cannot_bounce_for_its_age():
    day = 86_400
    p = shp.plan({}, {ALICE: "hold"}, ALIAS_QUEUE, release=[ALICE], logins=LOGINS, now=10_000 + 6 * day)
    assert p["release_ids"] == [] and p["requeue_ids"] == ["H1", "H2"]
    p = shp.plan({}, {ALICE: "hold"}, ALIAS_QUEUE, release=[ALICE], logins=LOGINS, now=10_000 + 600,
                requeue_after=300)
    assert p["requeue_ids"] == ["H1", "H2"]


# Postfix time values as postconf -h prints them, with the seconds they mean
POSTFIX_TIMES = [
    ("5d", 432_000),     # Debian's default maximal_queue_lifetime
    ("3600s", 3600),
    ("90m", 5400),
    ("2", 172_800),      # a bare number is in days for the lifetimes
    ("1w", 604_800),
    (" 4h ", 14_400),
    ("5x", None),        # not a Postfix unit
    ("", None),
    ("-1d", None),
]


@pytest.mark.parametrize("text,seconds", POSTFIX_TIMES)
def test_postfix_time_values(text, seconds):
    assert shp.postfix_seconds(text) == seconds


def test_a_host_with_short_queue_lifetimes_requeues_sooner():
    assert shp.requeue_after(["5d", "5d"]) == 86_400          # the default: a day
    assert shp.requeue_after(["60s", "5d"]) == 30             # half the shortest lifetime
    assert shp.requeue_after(["5d", "1h"]) == 1800            # bounce_queue_lifetime counts too
    assert shp.requeue_after(["garbage"]) == 86_400 and shp.requeue_after([]) == 86_400


def test_the_login_of_a_queued_message_comes_from_its_queue_file():
    envelope = ("*** ENVELOPE RECORDS deferred/4B2C1DEA ***\nmessage_size:             512\n"
                "named_attribute: log_ident=4B2C1DEA\nnamed_attribute: sasl_method=PLAIN\n"
                "named_attribute: sasl_username=Alice@Example-A.test\nsender: info@example-a.test\n")
    assert shp.login_of(envelope) == ALICE
    assert shp.login_of("*** ENVELOPE RECORDS ***\nsender: x@y.test\n") == ""


# --- queue ---------------------------------------------------------------------------------

def test_postqueue_json_lines_summary_and_bounds():
    lines = [json.dumps(m) for m in QUEUE] + ["", "garbage", json.dumps([1])]
    msgs, truncated, bad = mq.parse_lines(lines)
    assert len(msgs) == 6 and not truncated and bad == 2
    assert mq.summary(msgs, 5000) == {"deferred": 2, "oldest": 4100, "hold": 2, "total": 6}
    msgs, truncated, _ = mq.parse_lines(lines, max_lines=3)
    assert len(msgs) == 3 and truncated
    assert mq.summary([], 5000) == {"deferred": 0, "oldest": 0, "hold": 0, "total": 0}


def test_read_queue_is_bounded_in_lines_and_reports_failure(tmp_path):
    line = json.dumps(QUEUE[0])
    many = [sys.executable, "-c", f"import sys\nfor i in range(100000): print({line!r})"]
    msgs, truncated = mq.read_queue(max_lines=50, timeout=20, argv=many)
    assert len(msgs) == 50 and truncated
    msgs, truncated = mq.read_queue(argv=[sys.executable, "-c", f"print({line!r})"])
    assert len(msgs) == 1 and not truncated
    with pytest.raises(RuntimeError, match="postqueue -j failed"):
        mq.read_queue(argv=[sys.executable, "-c", "import sys; sys.exit('postqueue: fatal: Queue report unavailable')"])


def test_queue_watcher_fires_on_crossing_repeats_and_clears():
    w = mq.QueueWatcher({"deferred": 2, "age": 3600, "repeat": 600})
    few = [QUEUE[0]]
    assert w.round(few, 1500) is None
    rep = w.round(QUEUE, 1500)  # 2 deferred
    assert rep["state"] == "over" and rep["deferred"] == 2 and rep["thresholds"] == {"deferred": 2, "age": 3600}
    assert w.round(QUEUE, 1600) is None  # still over: quiet until `repeat`
    assert w.round(QUEUE, 2100)["state"] == "over"
    assert w.round(few, 2200)["state"] == "cleared"
    assert w.round(few, 2300) is None
    assert w.round(few, 1000 + 3600)["state"] == "over"  # age alone: the oldest is an hour old


def test_queue_settings_errors_name_the_pillar_key():
    assert mq.queue_settings(None)["deferred"] == 200 and mq.queue_settings({"age": 60})["age"] == 60
    with pytest.raises(ValueError, match="mailfleet:defense:queue:deferred"):
        mq.queue_settings({"deferred": "many"})
    with pytest.raises(ValueError, match="mailfleet:defense:queue:size"):
        mq.queue_settings({"size": 1})


def test_queue_thread_reports_on_the_abuse_tag():
    import threading
    w = mq.QueueWatcher({"deferred": 1, "interval": 1})
    stop = threading.Event()
    fired = []

    def fire(data, tag):
        fired.append((tag, data))
        stop.set()
    w.run(H1, fire, "mailfleet/abuse/report", stop=stop, reader=lambda n, t: (QUEUE, False))
    (tag, data), = fired
    assert tag == "mailfleet/abuse/report" and data["host"] == H1 and data["offenders"] == []
    assert data["queue"]["state"] == "over" and data["queue"]["deferred"] == 2
