"""The DNS runner's pure side (_utils/mailfleet_dns_plan.py): TSIG key file, host facts from grains, domains
merged from pillars, update plans from a diff, the verify table."""
import pytest

import mailfleet_dns_plan as runner  # salt://_utils: the runner's pure side
import mailfleet_records as records

KEYFILE = 'key "mailfleet-lab" {\n    algorithm hmac-sha256;\n    secret "c2VjcmV0";\n};\n'
HOSTS = {"mail01.lab.test": {"name": "mail01.lab.test", "ipv4": ["198.18.0.11"], "ipv6": []}}
DOMAIN = {"hosts": ["mail01.lab.test"]}


def test_parse_tsig_keyfile():
    assert runner.parse_tsig_keyfile(KEYFILE) == ("mailfleet-lab", "hmac-sha256", "c2VjcmV0")


@pytest.mark.parametrize("text", ["", "key x { algorithm hmac-sha256; };", "nothing"])
def test_parse_tsig_keyfile_refuses_broken_files(text):
    with pytest.raises(ValueError):
        runner.parse_tsig_keyfile(text)


def test_host_facts_leave_out_unreachable_addresses():
    got = runner.host_facts({"id": "mail01.lab.test", "fqdn": "mail01.lab.test",
                             "ipv4": ["127.0.0.1", "198.18.0.11", "0.0.0.0"],
                             "ipv6": ["::1", "fe80::1", "2001:db8::11"]})
    assert got == {"name": "mail01.lab.test", "ipv4": ["198.18.0.11"], "ipv6": ["2001:db8::11"]}


def test_merge_domains():
    pillars = {"m1": {"mailfleet": {"domains": {"a.test": {"hosts": ["m1"]}}}},
               "m2": {"mailfleet": {"domains": {"b.test": {"hosts": ["m2"]}}}}, "m3": {}}
    assert runner.merge_domains(pillars) == {"a.test": {"hosts": ["m1"]},
                                             "b.test": {"hosts": ["m2"]}}


def test_zone_of_takes_the_longest_zone():
    zones = ["test.", "example-a.test."]
    assert runner.zone_of("_dmarc.example-a.test.", zones) == "example-a.test."
    assert runner.zone_of("other.", zones) is None


def test_plan_adds_missing_and_replaces_only_what_differs():
    want = records.build("example-a.test", DOMAIN, HOSTS)
    observed = {("example-a.test.", "MX"): ["10 mail01.lab.test."],
                ("example-a.test.", "TXT"): ['"google-site-verification=x"',
                                             '"v=spf1 ip4:198.18.0.99 -all"']}
    plan = runner.plan_updates(want, records.diff(want, observed), ["example-a.test."])
    ops = plan["example-a.test."]
    assert ("delete", "example-a.test.", "TXT", '"v=spf1 ip4:198.18.0.99 -all"', None) in ops
    assert ("add", "example-a.test.", "TXT", '"v=spf1 ip4:198.18.0.11 -all"', 3600) in ops
    assert ("add", "_dmarc.example-a.test.", "TXT", '"v=DMARC1; p=none"', 3600) in ops
    # the MX is right and the other apex TXT is not ours: untouched
    assert not [o for o in ops if o[2] == "MX" or "google" in o[3]]


def test_plan_is_empty_when_dns_matches():
    want = records.build("example-a.test", DOMAIN, HOSTS)
    observed = dict(want["rrsets"])
    assert runner.plan_updates(want, records.diff(want, observed), ["example-a.test."]) == {}


def test_checked_records_are_never_planned():
    want = records.build("example-a.test", DOMAIN, HOSTS)
    observed = dict(want["rrsets"])
    observed[("mail01.lab.test.", "A")] = ["198.18.0.99"]
    result = records.diff(want, observed)
    assert result["wrong"]
    assert runner.plan_updates(want, result, ["example-a.test."]) == {}


def test_verify_rows_count_problems():
    want = records.build("example-a.test", DOMAIN, HOSTS)
    observed = dict(want["rrsets"])
    observed[("mail01.lab.test.", "A")] = ["198.18.0.11"]
    observed[("example-a.test.", "MX")] = []
    rows, bad = runner.verify_rows(
        {"example-a.test": {"diff": records.diff(want, observed)},
         "broken.test": {"error": "mailfleet:domains:broken.test:hosts: ..."}},
        {"mail01.lab.test": {"198.18.0.11": (False, "PTR none, want mail01.lab.test.")}})
    assert bad == 3
    results = {(r[1], r[2]): r[3] for r in rows}
    assert results[("example-a.test.", "MX")] == "MISSING"
    assert results[("198.18.0.11", "FCrDNS")] == "WRONG"
    assert ("broken.test", "-", "-", "ERROR", "mailfleet:domains:broken.test:hosts: ...") in rows
