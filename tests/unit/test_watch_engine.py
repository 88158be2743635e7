"""The mailfleet_watch engine's loop body: tail -> scan -> aggregate -> one bounded report."""
import json
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_utils"))
import mailfleet_watch as watch

RELAY = ("2026-11-25T19:56:01.000000+00:00 mail01 postfix/smtpd[4000]: NOQUEUE: reject: RCPT from "
         "unknown[{ip}]: 454 4.7.1 <x@elsewhere.test>: Relay access denied; from=<y@a.test> "
         "to=<x@elsewhere.test> proto=ESMTP helo=<a>\n")


@pytest.fixture
def log(tmp_path):
    path = tmp_path / "mail.log"
    path.write_text("")
    return path


def append(path, text):
    with open(path, "a") as fh:
        fh.write(text)


def test_one_report_per_interval_with_host_and_offenders(log, tmp_path):
    w = watch.Watcher(str(log), "mail01.lab.test", str(tmp_path / "state"), interval=1.0)
    append(log, RELAY.format(ip="198.19.0.5") * 2 + RELAY.format(ip="2001:db8::5") * 3)
    w.poll()
    first = w.report(1000.0, 1.0)  # relay threshold 3: only the IPv6 address is there yet
    assert first["host"] == "mail01.lab.test"
    assert [(o["ip"], o["rules"]) for o in first["offenders"]] == [("2001:db8::5", {"relay": 3})]
    append(log, RELAY.format(ip="198.19.0.5"))
    w.poll()
    rep = w.report(1001.0, 2.0)
    assert [(o["ip"], o["rules"]) for o in rep["offenders"]] == [("198.19.0.5", {"relay": 3})]
    json.dumps(rep)  # JSON-able: it travels on the event bus
    # nothing new: nothing to say
    w.poll()
    assert w.report(1002.0, 3.0) is None
    assert (tmp_path / "state").exists()


def test_report_is_bounded(log, tmp_path):
    w = watch.Watcher(str(log), "mail01.lab.test", None, max_ips=50, interval=1.0)
    append(log, "".join(RELAY.format(ip=f"198.19.{i // 250}.{i % 250 + 1}") * 3 for i in range(120)))
    w.poll()
    first = w.report(1000.0, 1.0)
    assert len(first["offenders"]) == 50 and first["deferred"] == 70
    second = w.report(1001.0, 2.0)
    third = w.report(1002.0, 3.0)
    assert len(second["offenders"]) == 50 and len(third["offenders"]) == 20
    assert len({o["ip"] for r in (first, second, third) for o in r["offenders"]}) == 120


def test_due_follows_the_interval(log):
    w = watch.Watcher(str(log), "h", None, interval=1.0)
    start = w.next_report
    assert not w.due(start - 0.5) and w.due(start)
    w.report(0.0, start)
    assert w.next_report == start + 1.0
