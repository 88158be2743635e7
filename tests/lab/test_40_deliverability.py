"""Deliverability: DNS records published from the master (RFC 2136 + TSIG), verified
record by record, bad input refused before anything is sent."""
import json

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.tsig
import dns.update
import pytest

from conftest import LAB_MAIL_DOMAINS, salt_run
from mflab import config, fleet

DNS = f"{config.NET_PREFIX}.2"
BAD_DOMAIN = "badspf.test"


def _key():
    text = (config.STATE / "tsig.key").read_text()
    name = text.split('"')[1]
    secret = text.split("secret")[1].split('"')[1]
    return dns.tsig.Key(dns.name.from_text(name), secret, dns.name.from_text("hmac-sha256"))


def nsupdate(zone: str, *ops):
    """What an operator does with nsupdate: ("replace"|"delete", name, type[, rdata])."""
    upd = dns.update.UpdateMessage(zone, keyring=_key())
    for op, name, rtype, *rdata in ops:
        if op == "replace":
            upd.replace(name, 60, rtype, *rdata)
        else:
            upd.delete(name, rtype, *rdata)
    ans = dns.query.tcp(upd, DNS, timeout=10)
    assert dns.rcode.to_text(ans.rcode()) == "NOERROR"


def lookup(name: str, rtype: str) -> list[str]:
    ans = dns.query.udp(dns.message.make_query(name, rtype), DNS, timeout=5)
    return [r.to_text() for rrset in ans.answer for r in rrset]


def txt(name: str) -> list[str]:
    return ["".join(s.decode() for s in dns.rdata.from_text("IN", "TXT", r).strings)
            for r in lookup(name, "TXT")]


def test_published_records_verify_green(lab, published):
    assert "10 mail01.lab.test." in lookup("example-a.test.", "MX")
    assert "10 mail02.lab.test." in lookup("example-b.test.", "MX")
    assert "v=spf1 ip4:198.18.0.11 -all" in txt("example-a.test.")
    assert any(v.startswith("v=DMARC1") for v in txt("_dmarc.example-b.test."))
    code, ret, out = salt_run("mailfleet_dns.verify", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0 and ret["ok"], out[-3000:]
    assert all(c["ok"] for host in ret["fcrdns"].values() for c in host.values())


def test_manual_mode_prints_zone_snippets_and_sends_nothing(lab, published):
    code, ret, out = salt_run("mailfleet_dns.publish", "mode=manual", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0, out[-3000:]
    snippet = ret["snippets"]["example-a.test"]
    assert "example-a.test. 3600 IN MX 10 mail01.lab.test." in snippet
    assert '"v=spf1 ip4:198.18.0.11 -all"' in snippet


def test_verify_reports_a_wrong_record_and_publish_repairs_only_it(lab, published):
    nsupdate("example-b.test", ("replace", "_dmarc.example-b.test.", "TXT", '"v=DMARC1; p=reject"'))
    try:
        code, ret, out = salt_run("mailfleet_dns.verify", f"domains={LAB_MAIL_DOMAINS}")
        assert code != 0 and not ret["ok"], out[-3000:]
        wrong = ret["domains"]["example-b.test"]["wrong"]
        assert [(e["name"], e["type"]) for e in wrong] == [("_dmarc.example-b.test.", "TXT")]
    finally:
        code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0, out[-3000:]
    assert ret["changes"]["example-b.test"] == [
        'delete _dmarc.example-b.test. TXT "v=DMARC1; p=reject"',
        'add _dmarc.example-b.test. TXT "v=DMARC1; p=none"']
    assert ret["changes"]["example-a.test"] == []
    assert salt_run("mailfleet_dns.verify", f"domains={LAB_MAIL_DOMAINS}")[0] == 0


@pytest.fixture
def bad_spf_domain(lab, published):
    path = fleet.EXTRA_DOMAINS / f"{BAD_DOMAIN}.yaml"
    includes = [f"include:_spf{i}.example.net" for i in range(11)]
    path.write_text(json.dumps({"mailfleet": {"domains": {BAD_DOMAIN: {
        "hosts": ["mail01.lab.test"], "description": "SPF over the lookup limit",
        "dns": {"spf": {"extra": includes}}}}}}))
    yield path
    path.unlink(missing_ok=True)


def test_spf_over_ten_lookups_is_refused_and_nothing_is_published(lab, bad_spf_domain):
    # A change publish would make for a good domain: it must not be sent either.
    nsupdate("example-a.test", ("delete", "_dmarc.example-a.test.", "TXT"))
    try:
        code, ret, out = salt_run("mailfleet_dns.publish",
                                  f"domains={LAB_MAIL_DOMAINS},{BAD_DOMAIN}")
        assert code != 0, out[-3000:]
        assert ret["published"] is False
        err = ret["errors"][BAD_DOMAIN]
        assert "11 DNS lookups" in err and "at most 10" in err and "dns:spf:extra" in err
        assert lookup("_dmarc.example-a.test.", "TXT") == []
    finally:
        bad_spf_domain.unlink()
        code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0, out[-3000:]
    assert any(v.startswith("v=DMARC1") for v in txt("_dmarc.example-a.test."))

