"""The lab's DNS data, rendered from the host table."""
from mflab import config, zones


def test_every_host_has_an_a_and_a_ptr():
    fleet = config.hosts(3)
    lab, rev = zones.lab_zone(fleet), zones.reverse_zone(fleet)
    for host in fleet:
        assert f"{host.name} IN A {host.ip}" in lab
        assert f"{host.octet} IN PTR {host.fqdn}." in rev
    assert [h.name for h in fleet if h.role == "mail"] == ["mail01", "mail02", "mail03"]


def test_mail_domain_zones_hold_only_soa_and_ns():
    # mailfleet publishes MX, SPF, DKIM, DMARC ...; the lab seeds none of them.
    out = zones.zones(config.hosts(2))
    for domain in config.MAIL_DOMAINS:
        records = [line.split()[2] for line in out[domain].splitlines()
                   if not line.startswith("$")]
        assert records == ["SOA", "NS"], (domain, out[domain])


def test_dnsbl_zone_lists_the_rfc5782_test_entry_only():
    text = zones.dnsbl_zone()
    assert "2.0.0.127 IN A 127.0.0.2" in text
    assert "1.0.0.127" not in text


def test_named_conf_is_authoritative_only_and_updates_need_the_key():
    conf = zones.named_conf(["lab.test"], "c2VjcmV0")
    assert "recursion no;" in conf
    assert 'allow-update { key "mailfleet-lab"; };' in conf
    assert "allow-query-cache { none; };" in conf


def test_the_tsig_key_file_gives_back_its_secret():
    secret = "c2VjcmV0LWZvci10aGUtbGFi"
    assert zones.tsig_secret_of(zones.tsig_keyfile(secret)) == secret
