"""Issue 13, findings 2 and 3: a master-owned host inventory (pillar mailfleet:inventory)
decides what other hosts act on, never a host's grains.

The inventory is parsed by _utils/mailfleet_inventory.py; the reroute runner admits a listed
host into its peer's mynetworks and picks the peer's relay address from it, and the
defense runner's never-ban list takes the fleet's addresses from it."""
import pytest

import mailfleet_ban_policy as bp
import mailfleet_reroute as ob

H1, H2 = "mail01.lab.test", "mail02.lab.test"
INVENTORY = {H1: {"addresses": ["198.18.0.11"]}, H2: {"addresses": ["198.18.0.12"], "relay_address": "198.18.0.12"}}


def pillar(inv=INVENTORY):
    return {"mailfleet": {"inventory": inv}}


@pytest.fixture
def reroute(tmp_path, monkeypatch):
    opts = {"mailfleet_ledger": str(tmp_path / "ledger.sqlite"), "cachedir": str(tmp_path)}
    monkeypatch.setattr(ob, "__opts__", opts, raising=False)
    applied, alerts = [], []
    monkeypatch.setattr(ob, "_apply", lambda host, conf, outbound=None: applied.append((host, outbound)) or (True, "ok"))
    monkeypatch.setattr(ob, "_alert", lambda kind, subject, message, details=None, severity="warning":
                        alerts.append((kind, subject)))
    st = ob.Store(opts["mailfleet_ledger"])
    yield st, applied, alerts
    st.close()


LISTED = {"ip": "198.18.0.11", "zone": "dnsbl.lab.test", "state": "listed", "codes": ["127.0.0.2"], "why": "x"}


def test_foreign_addresses_in_a_listed_hosts_grains_are_not_admitted_by_its_peer(reroute):
    st, applied, alerts = reroute
    fleet = {H1: ({"ipv4": ["198.18.0.11", "192.0.2.66", "0.0.0.0"], "fqdn_ip4": ["198.18.0.11"]}, pillar()),
             H2: ({"ipv4": ["198.18.0.12"], "fqdn_ip4": ["203.0.113.5"]}, pillar())}
    st.record(H1, LISTED, 1000.0)
    ob._converge(st, fleet, ob._conf(), "listed", 1000.0)
    row = {r["host"]: r for r in st.rows()}[H1]
    assert row["mode"] == "relay" and row["peer"] == H2
    assert row["relayhost"] == "[198.18.0.12]:25"          # the inventory's, not the fqdn_ip4 grain
    assert sorted(ob.outbound_pillar(H2, st.rows(), 1000.0, ob._conf())["admit"]) == ["198.18.0.11/32"]
    assert ("inventory_mismatch", H1) in alerts
    # each host's run is handed the mode just decided (not whatever its pillar compiles to)
    assert [(h, o["admit"]) for h, o in applied if h == H2] == [(H2, ["198.18.0.11/32"])]
    assert [(h, o.get("relayhost")) for h, o in applied if h == H1] == [(H1, "[198.18.0.12]:25")]


def test_a_host_missing_from_the_inventory_is_no_ones_peer_and_admitted_nowhere(reroute):
    st, _applied, _alerts = reroute
    inv = {H1: INVENTORY[H1]}
    fleet = {H1: ({"ipv4": ["198.18.0.11"]}, pillar(inv)), H2: ({"ipv4": ["198.18.0.12"]}, pillar(inv))}
    st.record(H1, LISTED, 1000.0)
    ob._converge(st, fleet, ob._conf(), "listed", 1000.0)
    assert st.current()[H1] == ("hold", None)


def test_the_never_ban_list_takes_the_fleets_addresses_from_the_inventory():
    found = bp.fleet_entries({H1: ({"ipv4": ["0.0.0.0/0", "192.0.2.66"]}, pillar())})
    nets = bp.allow_networks(found["networks"], found["addresses"])
    assert bp.allowed("198.18.0.11", nets) and bp.allowed("198.18.0.12", nets)
    assert not bp.allowed("192.0.2.66", nets)


@pytest.mark.parametrize("inv,why", [
    ({H1: {"addresses": ["198.18.0.0/16"]}}, "one address"),
    ({H1: {"addresses": "198.18.0.11"}}, "a list"),
    ({H1: {"addresses": ["fe80::1%eth0"]}}, "scope"),
    ({"../x": {"addresses": ["198.18.0.11"]}}, "minion id"),
    ({H1: {"addresses": ["198.18.0.11"], "relay_address": "198.18.0.99"}}, "one of its addresses"),
])
def test_a_bad_inventory_entry_is_refused_with_its_pillar_key(inv, why):
    import mailfleet_inventory as mi
    hosts, problems = mi.parse(inv)
    assert hosts == {} and problems and problems[0].startswith("mailfleet:inventory:") and why in problems[0]


def test_dns_records_take_the_hosts_addresses_from_the_inventory_not_from_grains():
    import mailfleet_dns_plan as dns
    grains = {H1: {"id": H1, "fqdn": "evil.example", "ipv4": ["198.18.0.11", "192.0.2.66"]},
              H2: {"id": H2, "fqdn": H2, "ipv4": ["198.18.0.12"]}}
    facts = dns.inventory_facts({H1: pillar(), H2: pillar()}, grains)
    assert facts[H1] == {"name": H1, "ipv4": ["198.18.0.11"], "ipv6": []}
    with pytest.raises(RuntimeError, match="mailfleet:inventory:mail03.lab.test: no entry"):
        dns.inventory_facts({H1: pillar()}, dict(grains, **{"mail03.lab.test": {"id": "mail03.lab.test"}}))


def test_the_resolvers_and_the_relayhost_the_pillar_names_are_never_banned():
    p = pillar()
    p["mailfleet"]["dnsbl"] = {"nameservers": ["198.18.0.2"]}
    p["mailfleet"]["postfix"] = {"main": {"relayhost": "[198.18.0.60]:587"}}
    found = bp.fleet_entries({H1: ({}, p)})
    nets = bp.allow_networks(found["networks"], found["addresses"])
    assert bp.allowed("198.18.0.2", nets) and bp.allowed("198.18.0.60", nets)
    assert not bp.allowed("198.18.0.61", nets)


def test_the_resolver_the_master_publishes_through_is_never_banned(monkeypatch):
    import mailfleet_defense as d
    monkeypatch.setattr(d, "__opts__", {"interface": "198.18.0.1", "mailfleet_dns_server": "198.18.0.2",
                                        "mailfleet_dns_resolver": "198.18.0.3"}, raising=False)
    monkeypatch.setattr(d, "_minion_addresses", lambda: {"addresses": [], "networks": []})
    nets = d._build_allow({"allow": []})
    assert bp.allowed("198.18.0.2", nets) and bp.allowed("198.18.0.3", nets) and bp.allowed("198.18.0.1", nets)
