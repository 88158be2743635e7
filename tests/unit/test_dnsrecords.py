"""Record builder: TXT splitting, SPF counting, DMARC, MTA-STS, diff, zone snippet."""
import json
import re

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

import mailfleet_records as R

D = "example-a.test"
KEY = "mailfleet:domains:example-a.test"
HOSTS = {
    "mail01.lab.test": {"ipv4": ["198.18.0.11"], "ipv6": ["2001:db8::11"]},
    "mail02.lab.test": {"ipv4": ["198.18.0.12"]},
}


def build(dns=None, hosts=("mail01.lab.test",), **kw):
    return R.build(D, {"hosts": list(hosts), "dns": dns or {}}, HOSTS, **kw)


def problems(**kw):
    with pytest.raises(R.RecordError) as exc:
        build(**kw)
    return exc.value.problems


def txt(result, name):
    (rdata,) = result["rrsets"][(name, "TXT")]
    return R.txt_value(rdata)


def dnspython_strings(rdata):
    """An independent parser of our zone-file TXT form."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata)
    return [s.decode("latin-1") for s in rd.strings]


# ---------------------------------------------------------------- TXT strings

@pytest.mark.parametrize("size,chunks", [(0, [0]), (1, [1]), (255, [255]), (256, [255, 1]),
                                         (410, [255, 155]), (765, [255, 255, 255]),
                                         (766, [255, 255, 255, 1])])
def test_txt_split_at_255_and_joined_back(size, chunks):
    value = "".join("abcdefghij"[i % 10] for i in range(size))
    parts = R.txt_chunks(value)
    assert [len(p.encode()) for p in parts] == chunks
    assert "".join(parts) == value
    rdata = R.txt_rdata(value)
    assert R.txt_value(rdata) == value
    assert dnspython_strings(rdata) == parts
    assert "".join(dnspython_strings(rdata)) == value


def test_txt_escaping_survives_an_independent_parser():
    value = 'a "quoted" back\\slash; ' + "x" * 300
    rdata = R.txt_rdata(value)
    assert R.txt_value(rdata) == value
    assert "".join(dnspython_strings(rdata)) == value
    # and our parser reads what dnspython writes (a different split is the same value)
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, '"v=DKIM1; k=rsa; " "p=AB" CD')
    assert R.txt_value(rd.to_text()) == "v=DKIM1; k=rsa; p=ABCD"


def test_txt_value_rejects_unterminated_string():
    with pytest.raises(ValueError):
        R.txt_value('"abc')


def test_long_dkim_record_is_split_and_joins_exactly():
    p = "M" * 392  # the size of a 2048-bit SPKI in base64
    res = build(dkim=[{"selector": "mf20261125", "k": "rsa", "p": p}])
    (rdata,) = res["rrsets"][("mf20261125._domainkey.example-a.test.", "TXT")]
    strings = R.txt_strings(rdata)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == f"v=DKIM1; k=rsa; p={p}"


# ---------------------------------------------------------------- MX, addresses, SPF

def test_defaults_mx_spf_dmarc():
    res = build(hosts=["mail01.lab.test", "mail02.lab.test"])
    assert res["domain"] == "example-a.test." and res["ttl"] == 3600
    assert res["rrsets"][("example-a.test.", "MX")] == ["10 mail01.lab.test.",
                                                         "10 mail02.lab.test."]
    assert txt(res, "example-a.test.") == \
        "v=spf1 ip4:198.18.0.11 ip6:2001:db8::11 ip4:198.18.0.12 -all"
    assert txt(res, "_dmarc.example-a.test.") == "v=DMARC1; p=none"
    # host addresses are checked, not published, unless asked
    assert res["checks"][("mail01.lab.test.", "A")]["rdata"] == ["198.18.0.11"]
    assert ("mail01.lab.test.", "A") not in res["owned"]
    pub = build(publish_host_addresses=True)
    assert pub["rrsets"][("mail01.lab.test.", "AAAA")] == ["2001:db8::11"]
    assert ("mail01.lab.test.", "AAAA") in pub["owned"]
    assert ("example-a.test.", "TXT") in res["owned"] and \
        res["owned"][("example-a.test.", "TXT")] == "v=spf1"


def test_mx_priorities_from_pillar():
    res = build({"mx": {"mail02.lab.test": 20}}, hosts=["mail01.lab.test", "mail02.lab.test"])
    assert res["rrsets"][("example-a.test.", "MX")] == ["10 mail01.lab.test.",
                                                         "20 mail02.lab.test."]
    errs = problems(dns={"mx": {"mail09.lab.test": 5}})
    assert any(e.startswith(f"{KEY}:dns:mx:") and "mail09" in e for e in errs)
    errs = problems(dns={"mx": {"mail01.lab.test": 70000}})
    assert any(e.startswith(f"{KEY}:dns:mx:mail01.lab.test") for e in errs)


def test_host_without_facts_is_an_error():
    errs = problems(hosts=["mail07.lab.test"])
    assert any("mail07.lab.test" in e and e.startswith(f"{KEY}:hosts") for e in errs)


def test_spf_extras_and_all():
    res = build({"spf": {"extra": ["include:_spf.example.net", "ip4:192.0.2.0/24"],
                         "all": "~all"}})
    assert txt(res, "example-a.test.") == ("v=spf1 ip4:198.18.0.11 ip6:2001:db8::11 "
                                           "include:_spf.example.net ip4:192.0.2.0/24 ~all")
    res = build({"spf": {"extra": ["redirect=_spf.example.net"]}})
    assert txt(res, "example-a.test.").endswith("redirect=_spf.example.net")  # no -all
    for bad, word in ((["+all"], "spf:all"), (["ip4:999.1.1.1"], "IPv4"),
                      (["foo:bar"], "unknown SPF mechanism"), (["include"], "needs a domain")):
        errs = problems(dns={"spf": {"extra": bad}})
        assert any(e.startswith(f"{KEY}:dns:spf:extra") and word in e for e in errs), errs
    errs = problems(dns={"spf": {"all": "+all"}})
    assert any(e.startswith(f"{KEY}:dns:spf:all") for e in errs)


def test_spf_term_counting():
    terms = ["include:a.example", "a", "mx:b.example/24", "ptr", "exists:%{i}.x.example",
             "redirect=c.example", "-include:d.example", "ip4:192.0.2.1", "ip6:2001:db8::1",
             "exp=explain.example", "-all"]
    assert R.spf_lookup_terms(terms) == ["include:a.example", "a", "mx:b.example/24", "ptr",
                                         "exists:%{i}.x.example", "redirect=c.example",
                                         "-include:d.example"]
    assert R.spf_lookup_count("v=spf1 " + " ".join(terms))[0] == 7


def test_spf_ten_lookups_allowed_eleven_refused_naming_the_key():
    ten = [f"include:s{i}.example.net" for i in range(10)]
    res = build({"spf": {"extra": ten}})
    assert R.spf_lookup_count(txt(res, "example-a.test."))[0] == 10
    errs = problems(dns={"spf": {"extra": ten[:9] + ["mx", "a"]}})
    (err,) = [e for e in errs if "lookups" in e]
    assert err.startswith(f"{KEY}:dns:spf:extra:")
    assert "11 DNS lookups" in err and "RFC 7208" in err and "at most 10" in err


def test_spf_counting_follows_includes_when_given_a_resolver():
    world = {
        "inc1.example.": ["v=spf1 " + " ".join(f"include:n{i}.example" for i in range(5))
                          + " -all"],
        "inc2.example.": ["v=spf1 a mx include:inc1.example ~all", "unrelated=txt"],
    }
    lookup = lambda name: world.get(name, [])
    count, found = R.spf_lookup_count("v=spf1 include:inc2.example -all", lookup)
    # inc2 (1) + a, mx, include:inc1 (3) + inc1's five includes (5)
    assert count == 9
    build({"spf": {"extra": ["include:inc2.example"]}}, resolve_txt=lookup)  # 9: fine
    errs = problems(dns={"spf": {"extra": ["include:inc2.example", "include:inc1.example"]}},
                    resolve_txt=lookup)
    assert any("lookups" in e for e in errs)
    # a loop of includes terminates
    loop = {"x.example.": ["v=spf1 include:y.example"], "y.example.": ["v=spf1 include:x.example"]}
    assert R.spf_lookup_count("v=spf1 include:x.example", lambda n: loop.get(n))[0] == 3


# ---------------------------------------------------------------- DMARC

def test_dmarc_tags():
    res = build({"dmarc": {"policy": "quarantine", "subdomain_policy": "reject", "pct": 50,
                           "rua": ["dmarc@example-a.test", "mailto:agg@example-a.test!10m"],
                           "ruf": "forensic@example-a.test", "adkim": "s", "aspf": "r",
                           "fo": "1:d"}})
    assert txt(res, "_dmarc.example-a.test.") == (
        "v=DMARC1; p=quarantine; sp=reject; pct=50; "
        "rua=mailto:dmarc@example-a.test,mailto:agg@example-a.test!10m; "
        "ruf=mailto:forensic@example-a.test; adkim=s; aspf=r; fo=1:d")
    assert res["owned"][("_dmarc.example-a.test.", "TXT")] == "v=DMARC1"
    assert txt(build({"dmarc": {"policy": "reject", "pct": 100}}),
               "_dmarc.example-a.test.") == "v=DMARC1; p=reject"


@pytest.mark.parametrize("cfg,key", [
    ({"policy": "block"}, "dmarc:policy"), ({"pct": 101}, "dmarc:pct"),
    ({"pct": "50"}, "dmarc:pct"), ({"adkim": "x"}, "dmarc:adkim"),
    ({"rua": ["not-an-address"]}, "dmarc:rua"), ({"rua": ["a@b.test!10x"]}, "dmarc:rua"),
    ({"fo": "2"}, "dmarc:fo"), ({"polcy": "none"}, "dmarc:polcy"),
])
def test_dmarc_validation_names_the_key(cfg, key):
    errs = problems(dns={"dmarc": cfg})
    assert any(e.startswith(f"{KEY}:dns:{key}") for e in errs), errs


def test_external_rua_needs_its_authorisation_record():
    res = build({"dmarc": {"rua": ["reports@dmarc.ext.test"]}})
    name = "example-a.test._report._dmarc.dmarc.ext.test."
    chk = res["checks"][(name, "TXT")]
    assert chk["key"] == f"{KEY}:dns:dmarc:rua" and "RFC 7489" in chk["why"]
    assert (name, "TXT") not in res["owned"]
    # nothing in DNS: publishing must stop, with an error naming the pillar key
    (err,) = R.preflight(res, {})
    assert err.startswith(f"{KEY}:dns:dmarc:rua:") and name in err
    # the report domain authorised us (any record starting with v=DMARC1 will do)
    assert R.preflight(res, {(name, "TXT"): ['"v=DMARC1; rua=mailto:x@dmarc.ext.test"']}) == []
    assert R.preflight(res, {(name, "TXT"): ['"v=spf1 -all"']})
    # a report domain that mailfleet itself publishes gets the record published
    res = build({"dmarc": {"rua": ["reports@dmarc.ext.test"]}}, managed_domains=["ext.test"])
    assert txt(res, name) == "v=DMARC1" and (name, "TXT") in res["owned"]
    assert not res["checks"].get((name, "TXT"))
    # same organisation (a subdomain, or the parent): no authorisation needed
    for addr in ("r@reports.example-a.test", "r@example-a.test"):
        res = build({"dmarc": {"rua": [addr]}})
        assert not [k for k in res["checks"] if "_report" in k[0]]


# ---------------------------------------------------------------- MTA-STS, TLS-RPT

def test_mta_sts_policy_and_id():
    res = build({"mta_sts": {"mode": "enforce", "max_age": 86400}},
                hosts=["mail01.lab.test", "mail02.lab.test"])
    policy = res["files"]["mta-sts.txt"]
    assert policy == ("version: STSv1\r\nmode: enforce\r\nmx: mail01.lab.test\r\n"
                      "mx: mail02.lab.test\r\nmax_age: 86400\r\n")
    record = txt(res, "_mta-sts.example-a.test.")
    m = re.fullmatch(r"v=STSv1; id=([A-Za-z0-9]{1,32})", record)
    assert m and m.group(1) == R.sts_id(policy)
    assert res["rrsets"][("mta-sts.example-a.test.", "A")] == ["198.18.0.11", "198.18.0.12"]

    def sts_id(**cfg):
        r = build({"mta_sts": dict({"mode": "enforce", "max_age": 86400}, **cfg)},
                  hosts=["mail01.lab.test", "mail02.lab.test"])
        return txt(r, "_mta-sts.example-a.test.")

    assert sts_id() == record  # stable
    assert sts_id(mode="testing") != record
    assert sts_id(max_age=604800) != record
    assert sts_id(mx=["*.lab.test"]) != record
    one = build({"mta_sts": {"mode": "enforce", "max_age": 86400}})
    assert txt(one, "_mta-sts.example-a.test.") != record  # the MX set changed


def test_mta_sts_validation():
    errs = problems(dns={"mta_sts": {"mode": "enforce", "max_age": 31557601}})
    assert any(e.startswith(f"{KEY}:dns:mta_sts:max_age") for e in errs)
    build({"mta_sts": {"mode": "enforce", "max_age": 31557600}})
    errs = problems(dns={"mta_sts": {"mode": "strict"}})
    assert any(e.startswith(f"{KEY}:dns:mta_sts:mode") for e in errs)
    errs = problems(dns={"mta_sts": {"mode": "enforce", "mx": ["mx.other.test"]}})
    assert any(e.startswith(f"{KEY}:dns:mta_sts:mx") and "mail01.lab.test" in e for e in errs)
    build({"mta_sts": {"mode": "testing", "mx": ["mx.other.test"]}})  # only enforce refuses
    assert R.sts_pattern_matches("*.lab.test", "mail01.lab.test.")
    assert not R.sts_pattern_matches("*.lab.test", "a.mail01.lab.test")
    assert not R.sts_pattern_matches("*.lab.test", "lab.test")


def test_tls_rpt():
    res = build({"tls_rpt": {"rua": ["tls@example-a.test", "https://rpt.example.net/v1"]}})
    assert txt(res, "_smtp._tls.example-a.test.") == \
        "v=TLSRPTv1; rua=mailto:tls@example-a.test,https://rpt.example.net/v1"
    errs = problems(dns={"tls_rpt": {"rua": []}})
    assert any(e.startswith(f"{KEY}:dns:tls_rpt:rua") for e in errs)


def test_dkim_entries_and_revocation():
    res = build(dkim=[{"selector": "mf20261125e", "k": "ed25519",
                       "p": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
                      {"selector": "mf20250101", "k": "rsa", "p": ""},
                      {"selector": "mf20240101", "absent": True}])
    assert txt(res, "mf20261125e._domainkey.example-a.test.") == \
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    assert txt(res, "mf20250101._domainkey.example-a.test.") == "v=DKIM1; k=rsa; p="
    assert ("mf20240101._domainkey.example-a.test.", "TXT") in res["owned"]
    assert ("mf20240101._domainkey.example-a.test.", "TXT") not in res["rrsets"]
    errs = problems(dkim=[{"selector": "bad_sel", "k": "rsa", "p": "AAAA"}])
    assert any(e.startswith(f"{KEY}:dkim") for e in errs)
    errs = problems(dkim=[{"selector": "s1", "k": "ed25519", "p": "AAAA"}])
    assert any("32 bytes" in e for e in errs)
    errs = problems(dkim=[{"selector": "s1", "k": "rsa", "p": "not base64!"}])
    assert any("base64" in e for e in errs)


# ---------------------------------------------------------------- diff

def observed_from(res):
    """What DNS would show once everything is published (and the checked records exist)."""
    out = {k: list(chk["rdata"]) for k, chk in res["checks"].items()}
    out.update({k: list(v) for k, v in res["rrsets"].items()})
    return out


def test_diff_all_ok_and_resplit_txt_is_not_a_difference():
    res = build(dkim=[{"selector": "s1", "k": "rsa", "p": "Q" * 400}])
    obs = observed_from(res)
    name = ("s1._domainkey.example-a.test.", "TXT")
    value = R.txt_value(obs[name][0])
    obs[name] = [" ".join(f'"{value[i:i + 100]}"' for i in range(0, len(value), 100))]
    obs[("EXAMPLE-A.test", "mx")] = ["10 MAIL01.lab.test."]  # case and dots do not matter
    del obs[("example-a.test.", "MX")]
    out = R.diff(res, obs)
    assert not out["missing"] and not out["wrong"] and not out["extra"]
    assert {(e["name"], e["type"]) for e in out["ok"]} >= set(res["rrsets"])


def test_diff_missing_wrong_extra_only_for_owned():
    res = build(dkim=[{"selector": "s1", "k": "rsa", "p": "QUJD"},
                      {"selector": "old", "absent": True}])
    obs = observed_from(res)
    del obs[("_dmarc.example-a.test.", "TXT")]                           # missing
    obs[("s1._domainkey.example-a.test.", "TXT")] = ['"v=DKIM1; k=rsa; p=WFla"']  # wrong
    obs[("old._domainkey.example-a.test.", "TXT")] = ['"v=DKIM1; k=rsa; p=T0xE"']  # extra
    obs[("example-a.test.", "TXT")].append('"google-site-verification=abc"')  # not ours
    obs[("www.example-a.test.", "A")] = ["192.0.2.80"]                     # not ours
    out = R.diff(res, obs)
    assert [(e["name"], e["add"]) for e in out["missing"]] == [
        ("_dmarc.example-a.test.", ['"v=DMARC1; p=none"'])]
    (wrong,) = out["wrong"]
    assert wrong["name"] == "s1._domainkey.example-a.test."
    assert wrong["add"] == ['"v=DKIM1; k=rsa; p=QUJD"']
    assert wrong["delete"] == ['"v=DKIM1; k=rsa; p=WFla"']
    (extra,) = out["extra"]
    assert extra["name"] == "old._domainkey.example-a.test." and extra["delete"]
    touched = {e["name"] for k in ("missing", "wrong", "extra") for e in out[k]}
    assert "www.example-a.test." not in touched
    assert all("google" not in r for k in out for e in out[k] for r in e["delete"])


def test_diff_two_spf_records_is_wrong():
    res = build()
    obs = observed_from(res)
    obs[("example-a.test.", "TXT")].append('"v=spf1 -all"')
    (wrong,) = R.diff(res, obs)["wrong"]
    assert wrong["delete"] == ['"v=spf1 -all"'] and not wrong["add"]


def test_diff_reports_checks_without_publishing_them():
    res = build()
    obs = observed_from(res)
    obs[("mail01.lab.test.", "A")] = ["198.18.0.99"]
    del obs[("mail01.lab.test.", "AAAA")]
    out = R.diff(res, obs)
    (wrong,) = out["wrong"]
    assert wrong["name"] == "mail01.lab.test." and wrong["publish"] is False
    assert [(e["name"], e["type"]) for e in out["missing"]] == [("mail01.lab.test.", "AAAA")]
    assert out["missing"][0]["publish"] is False


def test_expected_ptrs():
    assert R.expected_ptrs(HOSTS) == {
        ("1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "PTR"):
            ["mail01.lab.test."],
        ("11.0.18.198.in-addr.arpa.", "PTR"): ["mail01.lab.test."],
        ("12.0.18.198.in-addr.arpa.", "PTR"): ["mail02.lab.test."],
    }


# ---------------------------------------------------------------- output forms

def test_zone_snippet_loads_as_a_zone_and_matches():
    res = build({"dmarc": {"rua": ["r@ext.test"]}, "mta_sts": {"mode": "testing"},
                 "tls_rpt": {"rua": ["t@example-a.test"]}},
                dkim=[{"selector": "s1", "k": "rsa", "p": "Q" * 400}],
                managed_domains=["ext.test"])
    text = R.zone_snippet(D, res)
    zone = dns.zone.from_text(text, origin=D, relativize=False, check_origin=False)
    loaded = {}
    for name, rdataset in zone.iterate_rdatasets():
        assert rdataset.ttl == 3600
        loaded[(name.to_text(), dns.rdatatype.to_text(rdataset.rdtype))] = rdataset
    in_zone = {k: v for k, v in res["rrsets"].items() if k[0].endswith(D + ".")}
    assert set(loaded) == set(in_zone)
    for key, values in in_zone.items():
        got = sorted(R.normalize_rdata(key[1], r.to_text()) for r in loaded[key])
        assert got == sorted(R.normalize_rdata(key[1], v) for v in values)
    # the authorisation record lives in ext.test's zone: written as a comment
    assert "; example-a.test._report._dmarc.ext.test. 3600 IN TXT" in text
    assert ";   mode: testing" in text
    # a bare RRset dict works too
    assert R.zone_snippet(D, {("example-a.test.", "MX"): ["10 mx.example-a.test."]}, ttl=60) \
        .splitlines()[-1] == "example-a.test. 60 IN MX 10 mx.example-a.test."


def test_jsonable_round_trip():
    res = build({"dmarc": {"rua": ["r@ext.test"]}})
    out = json.loads(json.dumps(R.jsonable(res)))
    assert R.from_list(out["rrsets"]) == res["rrsets"]
    assert {(o["name"], o["type"]) for o in out["owned"]} == set(res["owned"])
