"""DNSBL checks (_utils/mailfleet_dnsbl_lookup.py): query names and zone decoding from the corpus in
tests/unit/dnsbl_corpus/ (input and expected result side by side), zone self-tests,
transitions, pillar checks, and the dnspython lookup against a real DNS server on loopback
that answers, says NXDOMAIN, SERVFAIL, REFUSED or stays silent."""
import socket
import threading
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

import mailfleet_dnsbl_lookup as bl

CORPUS = Path(__file__).parent / "dnsbl_corpus"


def cases(name):
    out = []
    for no, raw in enumerate((CORPUS / name).read_text().splitlines(), 1):
        if raw.strip() and not raw.startswith("##"):
            left, _, right = raw.partition("->")
            out.append(pytest.param(left.split(), right.split(), id=f"{name}:{no}"))
    return out


@pytest.mark.parametrize("left,right", cases("names.txt"))
def test_query_name(left, right):
    ip, zone, *opt = left
    key = opt[0].split("=", 1)[1] if opt else None
    assert bl.query_name(ip, zone, key) == right[0]


@pytest.mark.parametrize("left,right", cases("decode.txt"))
def test_decode(left, right):
    zone, kind, *value = left
    if kind == "answer":
        outcome = ("answer", value[0].split(","))
    elif kind == "error":
        outcome = ("error", value[0])
    else:
        outcome = (kind, None)
    v = bl.decode(zone, outcome)
    assert v["state"] == right[0], v
    assert v["codes"] == (right[1].split(",") if len(right) > 1 else []), v
    assert v["why"]


def test_listing_is_explained():
    v = bl.decode("zen.spamhaus.org", ("answer", ["127.0.0.4", "127.0.0.2"]))
    assert "SBL" in v["why"] and "XBL" in v["why"]
    assert "public/open resolver" in bl.decode("zen.spamhaus.org", ("answer", ["127.255.255.254"]))["why"]


def test_pillar_codes_override_the_table():
    v = bl.decode("dnsbl.example.net", ("answer", ["127.0.0.5"]), codes={"127.0.0.4": "four"})
    assert v["state"] == "unknown"
    v = bl.decode("dnsbl.example.net", ("answer", ["127.0.0.4"]), codes={"127.0.0.4": "four"})
    assert (v["state"], v["why"]) == ("listed", "four")


@pytest.mark.parametrize("bad", ["not-an-ip", "", None, "1.2.3.4/24"])
def test_query_name_refuses_garbage(bad):
    with pytest.raises((ValueError, TypeError)):
        bl.query_name(bad, "zen.spamhaus.org")


@pytest.mark.parametrize("key", ["bad key", "x" * 64, "a.b", "k;rm"])
def test_dqs_key_must_be_alphanumeric(key):
    with pytest.raises(ValueError, match="dqs_key"):
        bl.query_name("192.0.2.1", "zen.spamhaus.org", key)


# --- self-test and rounds, with a table as the DNS -------------------------------------------

def table_lookup(table, log=None):
    def lookup(name):
        if log is not None:
            log.append(name)
        return table.get(name, ("nxdomain", None))
    return lookup


LAB = [("dnsbl.lab.test", None)]
GOOD_LAB = {"2.0.0.127.dnsbl.lab.test.": ("answer", ["127.0.0.2"])}


def test_round_lists_only_the_listed_address():
    table = dict(GOOD_LAB)
    table["11.0.18.198.dnsbl.lab.test."] = ("answer", ["127.0.0.2"])
    res = bl.check_round(["198.18.0.11", "2001:db8::11"], LAB, table_lookup(table))
    assert res["zones"]["dnsbl.lab.test"]["ok"]
    assert res["verdicts"][("198.18.0.11", "dnsbl.lab.test")]["state"] == "listed"
    assert res["verdicts"][("2001:db8::11", "dnsbl.lab.test")]["state"] == "clear"


@pytest.mark.parametrize("table,why", [
    ({}, "127.0.0.2 not listed"),                                             # zone empty / wrong name
    ({"2.0.0.127.dnsbl.lab.test.": ("error", "timeout")}, "127.0.0.2 not listed"),
    ({"2.0.0.127.dnsbl.lab.test.": ("answer", ["127.0.0.2"]),                  # lists everything
      "1.0.0.127.dnsbl.lab.test.": ("answer", ["127.0.0.2"])}, "127.0.0.1 not clear"),
    ({"2.0.0.127.dnsbl.lab.test.": ("answer", ["127.255.255.254"])}, "127.0.0.2 not listed"),
])
def test_zone_failing_its_self_test_gives_unknown_and_is_not_asked(table, why):
    asked = []
    table = dict(table)
    table["11.0.18.198.dnsbl.lab.test."] = ("answer", ["127.0.0.2"])
    res = bl.check_round(["198.18.0.11"], LAB, table_lookup(table, asked))
    assert not res["zones"]["dnsbl.lab.test"]["ok"] and why in res["zones"]["dnsbl.lab.test"]["why"]
    v = res["verdicts"][("198.18.0.11", "dnsbl.lab.test")]
    assert v["state"] == "unknown" and "self-test" in v["why"]
    assert "11.0.18.198.dnsbl.lab.test." not in asked


def test_round_with_dqs_asks_the_dqs_names_only_for_spamhaus():
    asked = []
    key = "k3y"
    table = {f"2.0.0.127.{key}.zen.dq.spamhaus.net.": ("answer", ["127.0.0.2"]),
             "2.0.0.127.bl.spamcop.net.": ("answer", ["127.0.0.2"])}
    res = bl.check_round(["192.0.2.1"], bl.zone_specs(["zen.spamhaus.org", "bl.spamcop.net"]),
                         table_lookup(table, asked), dqs_key=key)
    assert all(z["ok"] for z in res["zones"].values())
    assert f"1.2.0.192.{key}.zen.dq.spamhaus.net." in asked and "1.2.0.192.bl.spamcop.net." in asked
    assert not any(n.endswith("zen.spamhaus.org.") for n in asked)
    assert "zen.spamhaus.org" in res["zones"]  # results keep the zone's public name


# --- transitions --------------------------------------------------------------------------

def V(state):
    return {"state": state, "codes": ["127.0.0.2"] if state == "listed" else [], "why": state}


K = ("198.18.0.11", "dnsbl.lab.test")


@pytest.mark.parametrize("states,expected", [
    # observations in order                 transitions fired (state, initial)
    (["clear", "clear", "clear"],            [("cleared", True)]),
    (["unknown", "unknown", "clear"],        [("cleared", True)]),
    (["clear", "listed", "listed", "clear"], [("cleared", True), ("listed", False), ("cleared", False)]),
    (["listed", "listed"],                   [("listed", True)]),
    (["listed", "unknown", "listed"],        [("listed", True), ("unknown", False), ("listed", False)]),
    (["clear", "unknown", "unknown", "clear"], [("cleared", True), ("unknown", False), ("cleared", False)]),
])
def test_tracker_fires_on_transitions_only(states, expected):
    t = bl.Tracker()
    fired = []
    for s in states:
        fired += [(x["state"], x["initial"]) for x in t.update({K: V(s)})]
    assert fired == expected


def test_tracker_forgets_addresses_no_longer_checked():
    t = bl.Tracker()
    t.update({K: V("listed")})
    t.update({})
    assert [x["state"] for x in t.update({K: V("listed")})] == ["listed"]


# --- pillar ---------------------------------------------------------------------------------

def test_settings_defaults():
    s = bl.settings({})
    assert [z for z, _ in s["zones"]] == ["zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"]
    assert s["interval"] == 300 and s["dqs_key"] is None


@pytest.mark.parametrize("conf,key", [
    ({"zones": "zen.spamhaus.org"}, "mailfleet:dnsbl:zones"),
    ({"zones": ["ok.example", "bad..zone"]}, "mailfleet:dnsbl:zones[1]"),
    ({"zones": [{"zone": "x.example", "codes": {"nope": "x"}}]}, "mailfleet:dnsbl:zones[0]"),
    ({"interval": 0}, "mailfleet:dnsbl:interval"),
    ({"timeout": "5"}, "mailfleet:dnsbl:timeout"),
    ({"resolvers": ["dns.example"]}, "mailfleet:dnsbl:resolvers"),
    ({"ips": "192.0.2.1"}, "mailfleet:dnsbl:ips"),
    ({"dqs_key": "not a key"}, "mailfleet:dnsbl:dqs_key"),
])
def test_settings_errors_name_the_pillar_key(conf, key):
    with pytest.raises(ValueError, match=key.replace("[", r"\[").replace("]", r"\]")):
        bl.settings(conf)


def test_sending_ips_keeps_global_unicast():
    assert bl.sending_ips(["127.0.0.1", "::1", "fe80::1%host0", "198.18.0.11", "::ffff:198.18.0.11",
                           "2001:db8::11", "0.0.0.0", "junk"]) == ["198.18.0.11", "2001:db8::11"]


# --- the dnspython lookup against a real server on loopback --------------------------------

class TinyDNS:
    """A UDP DNS server on 127.0.0.1: per-name answer, NXDOMAIN, SERVFAIL, REFUSED or silence."""

    def __init__(self, table):
        self.table = table
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            q = dns.message.from_wire(wire)
            name = q.question[0].name.to_text()
            what = self.table.get(name, "nxdomain")
            if what == "silent":
                continue
            r = dns.message.make_response(q)
            r.flags |= dns.flags.RA
            if what == "nxdomain":
                r.set_rcode(dns.rcode.NXDOMAIN)
            elif what in ("SERVFAIL", "REFUSED"):
                r.set_rcode(dns.rcode.from_text(what))
            elif what == "noanswer":
                pass
            else:
                r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", *what))
            self.sock.sendto(r.to_wire(), peer)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture()
def tinydns():
    servers = []

    def make(table):
        s = TinyDNS(table)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


def lookup_via(server, timeout=1.0):
    return bl.make_lookup(["127.0.0.1"], timeout, port=server.port)


def test_lookup_outcomes_through_dnspython(tinydns):
    srv = tinydns({"2.0.0.127.dnsbl.lab.test.": ["127.0.0.2"],
                   "1.0.0.127.dnsbl.lab.test.": "nxdomain",
                   "3.0.0.127.dnsbl.lab.test.": ["127.0.0.2", "127.0.0.4"],
                   "4.0.0.127.dnsbl.lab.test.": "SERVFAIL",
                   "5.0.0.127.dnsbl.lab.test.": "REFUSED",
                   "6.0.0.127.dnsbl.lab.test.": "silent",
                   "7.0.0.127.dnsbl.lab.test.": "noanswer"})
    look = lookup_via(srv)
    assert look("2.0.0.127.dnsbl.lab.test.") == ("answer", ["127.0.0.2"])
    assert look("1.0.0.127.dnsbl.lab.test.") == ("nxdomain", None)
    assert sorted(look("3.0.0.127.dnsbl.lab.test.")[1]) == ["127.0.0.2", "127.0.0.4"]
    assert look("4.0.0.127.dnsbl.lab.test.")[0] == "error"
    assert look("5.0.0.127.dnsbl.lab.test.")[0] == "error"
    assert look("6.0.0.127.dnsbl.lab.test.") == ("error", "timeout")
    assert look("7.0.0.127.dnsbl.lab.test.") == ("noanswer", None)
    for name in ("4", "5", "6"):
        assert bl.decode("dnsbl.lab.test", look(f"{name}.0.0.127.dnsbl.lab.test."))["state"] == "unknown"


def test_round_through_a_servfailing_zone_is_unknown(tinydns):
    srv = tinydns({"2.0.0.127.dnsbl.lab.test.": "SERVFAIL", "11.0.18.198.dnsbl.lab.test.": ["127.0.0.2"]})
    res = bl.check_round(["198.18.0.11"], LAB, lookup_via(srv))
    assert res["verdicts"][K]["state"] == "unknown"
