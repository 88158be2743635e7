"""The DNSBL thread of the mailfleet_watch engine: one round per interval, transitions only,
one event per round that names this host and its addresses."""
import sys
import threading
from pathlib import Path

import mailfleet_dnsbl_lookup as bl

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "_utils"))
import mailfleet_watch as watch

HOST = "mail01.lab.test"
CONF = {"zones": ["dnsbl.lab.test"], "interval": 1}


class Zone:
    """The lab zone as a table: 127.0.0.2 listed, plus whatever the test lists."""

    def __init__(self):
        self.listed = {"2.0.0.127.dnsbl.lab.test."}
        self.asked = 0

    def __call__(self, name):
        self.asked += 1
        return ("answer", ["127.0.0.2"]) if name in self.listed else ("nxdomain", None)


def test_rounds_fire_on_transitions_only():
    zone = Zone()
    w = watch.DnsblWatcher(bl, HOST, CONF, lambda: ["127.0.0.1", "198.18.0.11", "fe80::1"], zone)
    first = w.round()
    assert first["host"] == HOST and first["ips"] == ["198.18.0.11"]
    assert [(t["ip"], t["state"], t["initial"]) for t in first["transitions"]] == [("198.18.0.11", "cleared", True)]
    assert w.round() is None                                   # nothing changed: nothing said
    zone.listed.add("11.0.18.198.dnsbl.lab.test.")
    t, = w.round()["transitions"]
    assert (t["state"], t["codes"], t["previous"]) == ("listed", ["127.0.0.2"], "clear")
    assert w.round() is None
    zone.listed.discard("2.0.0.127.dnsbl.lab.test.")           # the zone breaks its self-test
    t, = w.round()["transitions"]
    assert t["state"] == "unknown" and "self-test" in t["why"]
    zone.listed.add("2.0.0.127.dnsbl.lab.test.")
    zone.listed.discard("11.0.18.198.dnsbl.lab.test.")
    t, = w.round()["transitions"]
    assert (t["state"], t["previous"]) == ("cleared", "unknown")


def test_pillar_ips_replace_the_host_addresses():
    w = watch.DnsblWatcher(bl, HOST, dict(CONF, ips=["192.0.2.25"]), lambda: ["198.18.0.11"], Zone())
    assert w.ips() == ["192.0.2.25"]


def test_run_loop_fires_and_survives_errors():
    zone = Zone()
    calls = {"n": 0}

    def flaky(name):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("resolver exploded")
        return zone(name)

    fired, stop = [], threading.Event()

    def fire(data, tag):
        fired.append((tag, data))
        stop.set()

    w = watch.DnsblWatcher(bl, HOST, CONF, lambda: ["198.18.0.11"], flaky)
    t = threading.Thread(target=w.run, args=(fire, stop), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert fired and fired[0][0] == "mailfleet/dnsbl/transition"


def test_refresh_restates_known_verdicts_so_a_lost_event_is_caught_up():
    zone = Zone()
    zone.listed.add("11.0.18.198.dnsbl.lab.test.")
    w = watch.DnsblWatcher(bl, HOST, dict(CONF, refresh=60), lambda: ["198.18.0.11"], zone)
    t0 = w.refreshed
    assert [t["state"] for t in w.round(t0 + 1)["transitions"]] == ["listed"]
    assert w.round(t0 + 30) is None
    ev = w.round(t0 + 61)                      # nothing changed, but a minute passed
    assert ev["refresh"] and [(t["state"], t["refresh"]) for t in ev["transitions"]] == [("listed", True)]
    assert w.round(t0 + 70) is None
