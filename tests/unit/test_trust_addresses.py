"""Issue 13, findings 3, 4 and 6: addresses from reports and grains, the never-ban list and
the firewall's rule order, as the postmaster sees them.

One address normaliser (_utils/mailfleet_address.py) serves the ban module, the runners and
the log parser; the nft ruleset is rendered from the real template and checked by nft itself."""
import ipaddress
import subprocess
from pathlib import Path

import jinja2
import pytest

import mailfleet_ban_sets as ban
import mailfleet_ban_policy as bp
import mailfleet_logparse as logparse
import mailfleet_reroute_plan as reroute_plan_lib

REPO = Path(__file__).resolve().parents[2]
SCOPED = ["2001:db8::1%eth0", "fe80::1%2", "2001:db8::7%x"]
POL = bp.policy({})


def report(*ips, host="mail02.lab.test"):
    return {"host": host, "offenders": [{"ip": ip, "rules": {"relay": 5}} for ip in ips]}


@pytest.mark.parametrize("scoped", SCOPED)
def test_a_scoped_ipv6_address_in_a_report_is_refused_and_the_rest_is_banned(scoped):
    out, refused = bp.check_report(report(scoped, "198.18.0.66"), "mail02.lab.test", POL)
    assert [a for a, _ in out] == ["198.18.0.66"]
    assert [r[0] for r in refused] == [repr(scoped)]


@pytest.mark.parametrize("scoped", SCOPED)
def test_no_normaliser_lets_a_scoped_address_through(scoped):
    with pytest.raises(ValueError):
        ban.normalise(scoped)
    with pytest.raises(ValueError):
        reroute_plan_lib.norm_ip(scoped)
    assert logparse.norm_ip(scoped) is None


@pytest.mark.parametrize("text,canonical", [
    ("198.18.0.66", "198.18.0.66"), (" 198.18.0.66 ", "198.18.0.66"), ("::ffff:198.18.0.66", "198.18.0.66"),
    ("2001:DB8::0:1", "2001:db8::1"),
])
def test_every_normaliser_gives_the_same_canonical_form(text, canonical):
    assert ban.normalise(text)[0] == canonical
    assert bp.norm_address(text) == canonical
    assert reroute_plan_lib.norm_ip(text) == canonical
    assert logparse.norm_ip(text.strip()) == canonical


@pytest.mark.parametrize("grain", ["0.0.0.0/0", "::/0", "198.18.0.0/15", "10.0.0.0/8", "2001:db8::/32"])
def test_a_network_in_a_hosts_grains_does_not_switch_bans_off(grain):
    """A compromised host writes networks into its ipv4/ipv6 grains: the never-ban list takes
    a host's own addresses one by one, never as networks."""
    nets = bp.allow_networks([], addresses=[grain, "198.18.0.12"])
    assert bp.allowed("198.18.0.12", nets)
    assert not bp.allowed("198.18.0.66", nets) and not bp.allowed("192.0.2.9", nets)
    assert not bp.allowed("2001:db8::9", nets)


@pytest.mark.parametrize("entry", ["0.0.0.0/0", "::/0", "10.0.0.0/8", "198.18.0.0/15", "2001:db8::/32"])
def test_the_allow_list_refuses_networks_wider_than_a_16_or_a_48(entry):
    nets = bp.allow_networks([entry])
    inside = str(ipaddress.ip_network(entry).network_address + 1000)
    assert not bp.allowed(inside, nets)


def test_the_allow_list_keeps_networks_the_master_owner_wrote():
    nets = bp.allow_networks(["198.18.0.0/16", "2001:db8:1::/48", "192.0.2.7"])
    assert bp.allowed("198.18.3.4", nets) and bp.allowed("2001:db8:1::99", nets) and bp.allowed("192.0.2.7", nets)
    assert not bp.allowed("192.0.2.8", nets)


def _ruleset(master_ip="198.18.0.1"):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(REPO / "salt" / "mail" / "files")))
    return env.get_template("mailfleet.nft.jinja").render(
        mf={"firewall": {"ban_timeout": 3600}}, ports=[25, 465, 587, 993], master_ip=master_ip)


def _rules(text):
    chain = text.split("flush chain inet mailfleet input", 1)[1]
    return [line.strip() for line in chain.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_a_banned_resolver_or_master_still_answers_this_host():
    """Replies to what this host opened (DNS queries, the master channel, relayhost sessions)
    are accepted before the ban drop: one bad ban must not cut DNS or the master off."""
    rules = _rules(_ruleset())
    drop = min(i for i, r in enumerate(rules) if "@banned_v4 drop" in r)
    reply = [i for i, r in enumerate(rules) if r == "ct direction reply accept"]
    master = [i for i, r in enumerate(rules) if r.startswith("ip saddr 198.18.0.1 ")]
    assert reply and reply[0] < drop, rules
    assert master and master[0] < drop, rules


def test_a_banned_address_loses_the_sessions_it_opened():
    """What a banned client opened (original direction) is dropped even when established."""
    rules = _rules(_ruleset())
    drop = min(i for i, r in enumerate(rules) if "@banned_v4 drop" in r)
    established = [i for i, r in enumerate(rules) if r.startswith("ct state established")]
    assert established and drop < established[0], rules


def test_the_ruleset_is_valid_for_nft():
    proc = subprocess.run(["nft", "-c", "-f", "-"], input=_ruleset(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_addresses_module_is_the_one_normaliser():
    import mailfleet_address as addr
    assert addr.address("::ffff:198.18.0.66") == "198.18.0.66"
    with pytest.raises(ValueError, match="scope"):
        addr.address("fe80::1%eth0")
    assert addr.network("198.18.0.0/16") == ipaddress.ip_network("198.18.0.0/16")
    with pytest.raises(ValueError, match="wider"):
        addr.network("0.0.0.0/0")
