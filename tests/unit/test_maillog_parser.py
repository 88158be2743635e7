"""mail.log detection core (_utils/mailfleet_logparse.py, mailfleet_logcount.py, mailfleet_logtail.py): the whole corpus in
tests/unit/maillog_corpus/ (an expectation before every line), the chunk scanner against the
per-line classifier, the aggregator's thresholds and bounds, and the tailer on real files
rotated by rename and truncated in place."""
import os
import shlex
from pathlib import Path

import pytest

import mailfleet_logcount as logcount
import mailfleet_logparse as logparse
import mailfleet_logtail as logtail

CORPUS = Path(__file__).parent / "maillog_corpus"
FIELDS = ("service", "detail", "user", "count")


def load_corpus():
    """[(file, line number, expectation dict or None for ignore, line)]"""
    samples = []
    for path in sorted(CORPUS.glob("*.log")):
        expect = None
        for no, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not raw.strip() or raw.startswith("##"):
                continue
            if raw.startswith("# "):
                assert expect is None, f"{path.name}:{no}: two expectations in a row"
                words = shlex.split(raw[2:])
                if words == ["ignore"]:
                    expect = {"ignore": True}
                else:
                    expect = {"kind": words[0], "ip": words[1]}
                    for word in words[2:]:
                        key, _, value = word.partition("=")
                        assert key in FIELDS, f"{path.name}:{no}: unknown field {key}"
                        expect[key] = value
                continue
            assert expect is not None, f"{path.name}:{no}: a line without an expectation"
            samples.append((path.name, no, None if expect.get("ignore") else expect, raw))
            expect = None
        assert expect is None, f"{path.name}: expectation at the end without a line"
    return samples


SAMPLES = load_corpus()


def test_corpus_is_substantial_and_covers_every_kind():
    kinds = {exp["kind"] for _f, _n, exp, _l in SAMPLES if exp}
    assert kinds == {"relay", "smtp_auth", "mail_auth", "auth_backend", "postscreen", "protocol",
                     "reject", "outbound"}
    assert sum(1 for s in SAMPLES if s[2] is None) >= 40
    assert len(SAMPLES) >= 120
    assert any(":" in exp["ip"] for _f, _n, exp, _l in SAMPLES if exp)  # IPv6


@pytest.mark.parametrize("name,no,expect,line", SAMPLES, ids=[f"{s[0]}:{s[1]}" for s in SAMPLES])
def test_corpus_line(name, no, expect, line):
    ev = logparse.classify(line)
    if expect is None:
        assert ev is None, f"expected no event, got {ev}"
        return
    assert ev is not None, "expected an event, got none"
    assert (ev.kind, ev.ip) == (expect["kind"], expect["ip"])
    for key in ("service", "detail"):
        if key in expect:
            assert getattr(ev, key) == expect[key]
    if "user" in expect:
        assert ev.user == (None if expect["user"] == "-" else expect["user"])
    assert ev.count == int(expect.get("count", 1))


def test_every_event_line_holds_a_scanner_keyword():
    for name, no, expect, line in SAMPLES:
        if expect:
            assert any(kw.decode() in line for kw in logparse.KEYWORDS), f"{name}:{no}"


def corpus_bytes():
    return "".join(line + "\n" for _f, _n, _e, line in SAMPLES).encode()


def test_scanner_agrees_with_classify_on_the_corpus():
    expected = [logparse.classify(line) for _f, _n, _e, line in SAMPLES]
    expected = [ev for ev in expected if ev is not None]
    scanner = logparse.Scanner()
    got = scanner.scan(corpus_bytes())
    assert [ev for ev in got if ev.kind != "outbound_rcpt"] == expected
    assert scanner.bytes == len(corpus_bytes())
    # outbound.log: alice's message 4LdK2v3Xq1z9Ab went to 3 recipients
    assert [ev for ev in got if ev.kind == "outbound_rcpt"] == [
        logparse.Event("outbound_rcpt", "198.18.0.100", "submission/smtpd", "4LdK2v3Xq1z9Ab",
                 "alice@example-a.test", 3)]


@pytest.mark.parametrize("size", [1, 7, 100, 4096])
def test_scanner_chunks_split_anywhere_give_the_same_events(tmp_path, size):
    data = corpus_bytes() * 3
    path = tmp_path / "mail.log"
    path.write_bytes(data)
    whole, scanned = logparse.scan_file(path)
    assert scanned == len(data) and len(whole) == 3 * len(logparse.Scanner().scan(corpus_bytes()))
    pieces, _ = logparse.scan_file(path, chunk_size=size)
    assert pieces == whole
    # a last line without its newline is classified too
    assert logparse.Scanner().scan(corpus_bytes().rstrip(b"\n")) == logparse.Scanner().scan(corpus_bytes())


def test_scanner_recipients_only_for_pending_sasl_messages():
    hdr = "2026-11-25T19:54:0{}.000000+00:00 mail01 "
    lines = [
        hdr.format(1) + "postfix/qmgr[800]: 4AAA: from=<x@y.example>, size=1, nrcpt=9 (queue active)",
        hdr.format(2) + "postfix/submission/smtpd[1]: 4BBB: client=unknown[198.18.0.100], "
                        "sasl_method=PLAIN, sasl_username=alice@example-a.test",
        hdr.format(3) + "postfix/qmgr[800]: 4BBB: from=<alice@example-a.test>, size=10, nrcpt=25 (queue active)",
        hdr.format(4) + "postfix/qmgr[800]: 4BBB: from=<alice@example-a.test>, size=10, nrcpt=25 (queue active)",
    ]
    s = logparse.Scanner()
    events = s.scan("\n".join(lines).encode() + b"\n")
    assert [(e.kind, e.user, e.count) for e in events] == [
        ("outbound", "alice@example-a.test", 1), ("outbound_rcpt", "alice@example-a.test", 25)]
    # the client line in one chunk, qmgr's in the next
    s = logparse.Scanner()
    assert len(s.scan((lines[1] + "\n").encode())) == 1
    assert [e.count for e in s.scan((lines[2] + "\n").encode())] == [25]
    # pending queue ids are bounded in number ...
    s = logparse.Scanner(max_pending=2)
    for qid in ("4C1", "4C2", "4C3"):
        s.scan(lines[1].replace("4BBB", qid).encode() + b"\n")
    assert list(s._pending) == [b" 4C2: from=<", b" 4C3: from=<"]
    # ... and in how much log they wait for their qmgr line
    s = logparse.Scanner(pending_bytes=1000)
    s.scan((lines[1] + "\n").encode())
    s.scan(b"x" * 500 + b"\n")
    assert len(s._pending) == 1
    s.scan(b"x" * 500 + b"\n")
    assert not s._pending and s.scan((lines[2] + "\n").encode()) == []
    # a line that only looks like qmgr's is not taken
    s = logparse.Scanner()
    fake = hdr.format(3) + "postfix/pickup[801]: 4BBB: from=<alice@example-a.test>, nrcpt=99 (queue active)"
    assert [e.kind for e in s.scan(f"{lines[1]}\n{fake}\n{lines[2]}\n".encode())] == ["outbound", "outbound_rcpt"]


# --- aggregator ---------------------------------------------------------------------------

def ev(kind, ip, n=1, user=None, service="smtpd"):
    return logparse.Event(kind, ip, service, "x", user, n)


def test_merge_thresholds_validates_pillar():
    t = logcount.merge_thresholds({"relay": {"count": 1}, "outbound": {"recipients": 50}})
    assert t["relay"] == {"count": 1, "window": 600}
    assert t["outbound"]["recipients"] == 50 and t["outbound"]["messages"] == 200
    for bad in ({"nope": {}}, {"relay": {"count": 0}}, {"relay": {"count": "3"}},
                {"relay": {"cuont": 3}}, {"relay": 3}, {"auth": {"window": True}}):
        with pytest.raises(ValueError):
            logcount.merge_thresholds(bad)


def test_one_report_per_interval_and_nothing_under_threshold():
    agg = logcount.Aggregator(start=0)
    agg.add_all([ev("relay", "198.19.0.5")] * 2)
    assert agg.report(10) is None  # 2 < 3
    agg.add_all([ev("relay", "198.19.0.5")] * 40 + [ev("relay", "198.19.0.6")])
    rep = agg.report(20)
    assert rep["interval"] == [10, 20]
    assert rep["offenders"] == [{"ip": "198.19.0.5", "rules": {"relay": 42}, "kinds": {"relay": 42},
                                 "services": ["smtpd"], "users": []}]
    assert rep["events"] == {"relay": 41}
    assert (rep["deferred"], rep["dropped"], rep["untracked"]) == (0, 0, 0)


def test_reported_again_only_after_threshold_more_events():
    agg = logcount.Aggregator(start=0)
    agg.add_all([ev("relay", "198.19.0.5")] * 3)
    assert [o["ip"] for o in agg.report(5)["offenders"]] == ["198.19.0.5"]
    agg.add_all([ev("relay", "198.19.0.5")] * 2)
    assert agg.report(10) is None
    agg.add(ev("relay", "198.19.0.5"))
    assert agg.report(15)["offenders"][0]["rules"] == {"relay": 6}


def test_window_slides_and_forgets():
    agg = logcount.Aggregator({"relay": {"count": 3, "window": 60}}, start=0)
    agg.add_all([ev("relay", "198.19.0.5")] * 2)
    assert agg.report(10) is None
    agg.add(ev("relay", "198.19.0.5"))
    assert agg.report(100) is None  # the first two fell out of the 60 s window
    agg.add_all([ev("relay", "198.19.0.5")] * 2)
    assert agg.report(110)["offenders"][0]["rules"] == {"relay": 3}
    # all expired: the next offence counts from zero and is a first report again
    assert agg.report(500) is None
    assert not agg._totals["relay"] and not agg._since
    agg.add_all([ev("relay", "198.19.0.5")] * 3)
    assert agg.report(510)["offenders"][0]["rules"] == {"relay": 3}


def test_auth_counts_an_attempt_logged_twice_once():
    agg = logcount.Aggregator({"auth": {"count": 4}}, start=0)
    # IMAP: login line says 3 attempts, auth worker logged the 3 mismatches
    agg.add(ev("mail_auth", "198.19.7.1", 3, "alice", "imap-login"))
    agg.add_all([ev("auth_backend", "198.19.7.1", 1, "alice", "auth-worker")] * 3)
    assert agg.report(10) is None  # max(3, 3) = 3 < 4
    # SMTP AUTH through Dovecot: one Postfix warning + one worker line
    agg.add(ev("smtp_auth", "198.19.7.1", 1, "bob", "submission/smtpd"))
    agg.add(ev("auth_backend", "198.19.7.1", 1, "bob", "auth-worker"))
    off = agg.report(20)["offenders"][0]
    assert off["rules"] == {"auth": 4}
    assert off["kinds"] == {"mail_auth": 3, "auth_backend": 4, "smtp_auth": 1}
    assert off["users"] == ["bob"]
    # worker lines alone (imap client still connected) count too
    agg2 = logcount.Aggregator({"auth": {"count": 4}}, start=0)
    agg2.add_all([ev("auth_backend", "2001:db8::1", 1, "x", "auth")] * 4)
    assert agg2.report(5)["offenders"][0]["ip"] == "2001:db8::1"


def test_cap_defers_excess_to_next_reports_in_order():
    agg = logcount.Aggregator(max_ips=3, start=0)
    for i in range(7):
        agg.add_all([ev("relay", f"198.19.1.{i}")] * (10 + i))
    r1 = agg.report(5)
    assert [o["ip"] for o in r1["offenders"]] == ["198.19.1.6", "198.19.1.5", "198.19.1.4"]
    assert r1["deferred"] == 4
    agg.add_all([ev("relay", "198.19.2.1")] * 50)
    r2 = agg.report(10)  # the waiting ones first, oldest first
    assert [o["ip"] for o in r2["offenders"]] == ["198.19.1.3", "198.19.1.2", "198.19.1.1"]
    assert r2["deferred"] == 2
    r3 = agg.report(15)
    assert [o["ip"] for o in r3["offenders"]] == ["198.19.1.0", "198.19.2.1"]
    assert r3["deferred"] == 0
    assert agg.report(20) is None


def test_backlog_bound_counts_dropped_and_tracking_bound_counts_untracked():
    agg = logcount.Aggregator(max_ips=1, max_backlog=2, max_tracked=5, start=0)
    for i in range(8):
        agg.add_all([ev("relay", f"198.19.3.{i}")] * 3)
    rep = agg.report(5)
    assert len(rep["offenders"]) == 1 and rep["deferred"] == 2
    assert rep["dropped"] == 2  # 5 tracked offenders: 1 sent, 2 wait, 2 dropped
    assert rep["untracked"] == 9  # 3 addresses x 3 events beyond max_tracked
    rep = agg.report(10)
    assert (rep["dropped"], rep["untracked"]) == (0, 0)


def test_loopback_and_unknown_kinds_are_not_counted():
    agg = logcount.Aggregator({"relay": {"count": 1}}, start=0)
    agg.add_all([ev("relay", "127.0.0.1"), ev("relay", "::1"), ev("relay", None), ev("weird", "198.19.0.1")])
    assert agg.report(5) is None


def test_outbound_volume_per_sasl_user():
    agg = logcount.Aggregator({"outbound": {"messages": 5, "recipients": 20, "window": 3600}}, start=0)
    for _ in range(4):
        agg.add(ev("outbound", "198.18.0.100", 1, "alice@example-a.test", "submission/smtpd"))
        agg.add(ev("outbound_rcpt", "198.18.0.100", 2, "alice@example-a.test", "submission/smtpd"))
    agg.add(ev("outbound", "198.18.0.101", 1, "bob@example-b.test"))
    assert agg.report(60) is None
    agg.add(ev("outbound_rcpt", "198.18.0.100", 15, "alice@example-a.test"))  # one big message
    rep = agg.report(120)
    assert rep["offenders"] == []
    assert rep["outbound"] == [{"user": "alice@example-a.test", "messages": 4, "recipients": 23,
                                "window": 3600, "ips": ["198.18.0.100"]}]
    agg.add(ev("outbound", "198.18.0.101", 1, "bob@example-b.test"))
    assert agg.report(180) is None
    # the window forgets the old volume
    assert agg.report(5000) is None and not agg._totals["outbound"] and not agg._since


def test_report_feeds_from_a_scanned_log():
    hdr = "2026-11-25T19:48:13.125836+00:00 mail01 "
    text = "".join(
        hdr + f"postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[198.19.0.{i % 4}]: 454 4.7.1 "
              f"<x@y.example>: Relay access denied; from=<> to=<x@y.example> proto=ESMTP helo=<x>\n"
        for i in range(12))
    agg = logcount.Aggregator(start=0)
    agg.add_all(logparse.Scanner().scan(text.encode()))
    rep = agg.report(1)
    assert sorted(o["ip"] for o in rep["offenders"]) == [f"198.19.0.{i}" for i in range(4)]


# --- tailer -------------------------------------------------------------------------------

def append(path, text):
    with open(path, "ab") as fh:
        fh.write(text.encode())


def test_tailer_starts_at_end_and_returns_complete_lines_only(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("old 1\nold 2\npartial")
    t = logtail.Tailer(log)
    assert t.read() == b""
    append(log, " line\nnew 1\nnew")
    assert t.read() == b"partial line\nnew 1\n"  # from the last line start; "new" waits
    append(log, " 2\n")
    assert t.read() == b"new 2\n"
    assert t.read() == b""
    t2 = logtail.Tailer(log, from_start=True)
    assert t2.read() == b"old 1\nold 2\npartial line\nnew 1\nnew 2\n"


def test_tailer_follows_rotation_by_rename_and_recreate(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("a1\n")
    t = logtail.Tailer(log, from_start=True)
    assert t.read() == b"a1\n"
    append(log, "a2\n")
    os.rename(log, tmp_path / "mail.log.1")  # logrotate: rename, create
    log.write_text("")
    append(tmp_path / "mail.log.1", "a3\n")  # the writer has not reopened yet
    assert t.read() == b"a2\na3\n"
    assert ("rotated", str(log)) in t.notes
    append(tmp_path / "mail.log.1", "a4 unterminated")
    append(log, "b1\n")  # the writer reopened: the old file is finished
    assert t.read() == b"a4 unterminatedb1\n"
    append(log, "b2\n")
    assert t.read() == b"b2\n"
    assert t.state["ino"] == os.stat(log).st_ino
    t.close()


def test_tailer_rotation_while_the_file_is_missing(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("a1\n")
    t = logtail.Tailer(log, from_start=True)
    assert t.read() == b"a1\n"
    os.rename(log, tmp_path / "mail.log.1")
    append(tmp_path / "mail.log.1", "a2\n")
    assert t.read() == b"a2\n"
    assert ("missing", str(log)) in t.notes
    append(log, "b1\n")
    assert t.read() == b"b1\n"


def test_tailer_truncation_in_place(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("line 1\nline 2\n")
    t = logtail.Tailer(log, from_start=True)
    assert t.read() == b"line 1\nline 2\n"
    with open(log, "r+b") as fh:  # copytruncate
        fh.truncate(0)
    append(log, "x\n")
    assert t.read() == b"x\n"
    assert ("truncated", str(log)) in t.notes
    # truncated and written past the old offset before we looked: the signature notices
    append(log, "y\n")
    assert t.read() == b"y\n"
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, "a much longer line than before\n")
    assert t.read() == b"a much longer line than before\n"
    assert ("truncated", str(log)) in t.notes


def test_tailer_resumes_from_saved_state(tmp_path):
    log = tmp_path / "mail.log"
    state_file = tmp_path / "state.json"
    log.write_text("1\n2\n")
    t = logtail.Tailer(log, from_start=True)
    assert t.read() == b"1\n2\n"
    logtail.save_state(state_file, t.state)
    t.close()
    append(log, "3\n")
    t = logtail.Tailer(log, logtail.load_state(state_file))
    assert t.read() == b"3\n"
    logtail.save_state(state_file, t.state)
    t.close()
    # rotated while stopped: the rest of the old file (now mail.log.1), then the new file
    append(log, "4\n")
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text("5\n")
    t = logtail.Tailer(log, logtail.load_state(state_file))
    assert t.read() == b"4\n5\n"
    assert ("resumed-rotated", str(tmp_path / "mail.log.1")) in t.notes
    logtail.save_state(state_file, t.state)
    t.close()
    # truncated while stopped
    with open(log, "r+b") as fh:
        fh.truncate(0)
    append(log, "6\n")
    t = logtail.Tailer(log, logtail.load_state(state_file))
    assert t.read() == b"6\n"
    t.close()
    # the old file is gone too: the new one from its start
    state = t.state
    os.rename(log, tmp_path / "elsewhere")
    log.write_text("7\n")
    t = logtail.Tailer(log, state)
    assert t.read() == b"7\n"
    assert logtail.load_state(tmp_path / "absent.json") is None


def test_tailer_budget_and_a_file_that_appears_later(tmp_path):
    log = tmp_path / "mail.log"
    t = logtail.Tailer(log, max_read=10)
    assert t.read() == b"" and t.state is None
    log.write_text("0123\n4567\n89ab\n")  # created after we started: read from 0
    assert t.read() == b"0123\n4567\n"
    assert t.read() == b"89ab\n"
    append(log, "x" * 25 + "\n")  # one line longer than the budget: in pieces, never stuck
    got = b""
    for _ in range(5):
        got += t.read()
    assert got == b"x" * 25 + b"\n"


def test_tailer_feeds_scanner_across_rotation(tmp_path):
    log = tmp_path / "mail.log"
    line = ("2026-11-25T19:48:13.125836+00:00 mail01 postfix/smtpd[1]: NOQUEUE: reject: RCPT from "
            "unknown[198.19.0.{}]: 454 4.7.1 <x@y.example>: Relay access denied; from=<> "
            "to=<x@y.example> proto=ESMTP helo=<x>\n")
    log.write_text("")
    t, s = logtail.Tailer(log), logparse.Scanner()
    append(log, line.format(1))
    got = s.scan(t.read())
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text(line.format(3))
    append(tmp_path / "mail.log.1", line.format(2))
    got += s.scan(t.read())
    assert [e.ip for e in got] == ["198.19.0.1", "198.19.0.2", "198.19.0.3"]
