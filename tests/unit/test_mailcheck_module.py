"""The verdicts of mailcheck.ritual (_utils/mailfleet_mailcheck_verdicts.py): reply parsing,
verdicts, certificate names, FCrDNS, the table. The protocol clients
(_utils/mailfleet_mailcheck_probes.py) are tested for real in tests/lab/test_30_mailcheck.py."""
import pytest

import mailfleet_mailcheck_verdicts as mc


# --- SMTP replies -------------------------------------------------------------------------

def test_reply_text_joins_code_and_lines():
    assert mc.reply_text(250, b"2.1.0 Ok") == "250 2.1.0 Ok"
    assert mc.reply_text(220, b"mail01.lab.test ESMTP\nmail01.lab.test ESMTP") == \
        "220 mail01.lab.test ESMTP / mail01.lab.test ESMTP"
    assert mc.reply_text(-1, b"") == "-1"


POSTFIX_EHLO = (b"mail01.lab.test\nPIPELINING\nSIZE 52428800\nETRN\nSTARTTLS\n"
                b"ENHANCEDSTATUSCODES\n8BITMIME\nDSN\nSMTPUTF8\nCHUNKING")


def test_parse_ehlo_postfix_reply():
    greeting, features = mc.parse_ehlo(POSTFIX_EHLO)
    assert greeting == "mail01.lab.test"
    assert features["SIZE"] == "52428800"
    assert "STARTTLS" in features and "AUTH" not in features


def test_parse_ehlo_auth_forms_merge_and_keywords_are_case_insensitive():
    greeting, features = mc.parse_ehlo("mx.example.test Hello\nauth PLAIN LOGIN\nAUTH=PLAIN LOGIN\nstarttls")
    assert greeting == "mx.example.test"
    assert features["AUTH"] == "PLAIN LOGIN"
    assert "STARTTLS" in features


def test_parse_ehlo_empty():
    assert mc.parse_ehlo(b"") == ("", {})


def test_code_class():
    assert [mc.code_class(c) for c in (220, 354, 454, 554, -1, None, 600)] == [2, 3, 4, 5, 0, 0, 0]


def test_smtp_verdict_pass():
    ok, detail = mc.smtp_verdict("mail01.lab.test", 220, b"mail01.lab.test ESMTP", 250, POSTFIX_EHLO)
    assert ok, detail
    assert detail.startswith("banner 220 mail01.lab.test ESMTP; EHLO 250:")
    assert "STARTTLS" in detail


def test_smtp_verdict_without_starttls_fails():
    ok, detail = mc.smtp_verdict("mail01.lab.test", 220, b"mail01.lab.test ESMTP", 250,
                                 b"mail01.lab.test\nPIPELINING\nSIZE 10240000")
    assert not ok and "STARTTLS not offered" in detail


def test_smtp_verdict_seed_sabotage_wrong_myhostname_fails():
    # Seed section 10, part 3: myhostname changed to a fake name.
    ok, detail = mc.smtp_verdict("mail01.lab.test", 220, b"fake.lab.test ESMTP", 250,
                                 b"fake.lab.test\nSTARTTLS")
    assert not ok
    assert "banner names fake.lab.test, not mail01.lab.test" in detail
    assert "EHLO reply names fake.lab.test" in detail


def test_smtp_verdict_bad_banner_and_bad_ehlo():
    ok, detail = mc.smtp_verdict("h.test", 421, b"4.3.2 Service shutting down", 250, b"")
    assert not ok and detail == "banner is not 220: 421 4.3.2 Service shutting down"
    ok, detail = mc.smtp_verdict("h.test", 220, b"h.test ESMTP", 502, b"5.5.2 Error: command not recognized")
    assert not ok and "EHLO not accepted: 502" in detail


# --- relay, AUTH, closed ports --------------------------------------------------------------

def test_relay_verdict_refused_as_relay():
    ok, detail = mc.relay_verdict(554, b"5.7.1 <mailcheck@relay-test.invalid>: Relay access denied")
    assert ok and "refused: 554 5.7.1" in detail
    ok, _ = mc.relay_verdict(454, b"4.7.1 <mailcheck@relay-test.invalid>: Relay access denied")
    assert ok


def test_relay_verdict_accepted_is_open_relay():
    ok, detail = mc.relay_verdict(250, b"2.1.5 Ok")
    assert not ok and detail.startswith("OPEN RELAY") and "250 2.1.5 Ok" in detail


def test_relay_verdict_other_refusal_means_not_tested():
    ok, detail = mc.relay_verdict(450, b"4.7.1 <x>: Helo command rejected: Host not found")
    assert not ok and "relay not tested" in detail and "Helo command rejected" in detail


def test_auth_before_tls_refused_and_not_advertised():
    ok, detail = mc.auth_before_tls_verdict(False, 530, b"5.7.0 Must issue a STARTTLS command first")
    assert ok
    assert detail == ("AUTH not advertised before STARTTLS; AUTH PLAIN refused: "
                      "530 5.7.0 Must issue a STARTTLS command first")


def test_auth_before_tls_advertised_but_refused_is_reported_as_such():
    ok, detail = mc.auth_before_tls_verdict(True, 538, b"5.7.11 Encryption required")
    assert ok and detail.startswith("AUTH advertised before STARTTLS")


def test_auth_before_tls_accepted_fails():
    ok, detail = mc.auth_before_tls_verdict(True, 334, b"")
    assert not ok and "accepted in plaintext" in detail
    ok, detail = mc.auth_before_tls_verdict(False, 454, b"4.7.0 Temporary authentication failure")
    assert not ok and "deferred" in detail


def test_bad_password_verdict():
    assert mc.bad_password_verdict(535, b"5.7.8 Error: authentication failed: authentication failure")[0]
    ok, detail = mc.bad_password_verdict(235, b"2.7.0 Authentication successful")
    assert not ok and "ACCEPTED" in detail
    ok, detail = mc.bad_password_verdict(454, b"4.7.0 Temporary authentication failure")
    assert not ok and "expected 535" in detail


@pytest.mark.parametrize("outcome,ok", [("refused", True), ("timeout", True),
                                        ("unreachable", True), ("open", False), ("error", False)])
def test_closed_verdict(outcome, ok):
    got, detail = mc.closed_verdict(143, outcome, "banner '* OK Dovecot ready.'" if outcome == "open" else "")
    assert got is ok
    assert "143" in detail
    if outcome == "open":
        assert detail == "port 143 is OPEN: banner '* OK Dovecot ready.'"


# --- certificate names ------------------------------------------------------------------------

PEERCERT = {
    "subject": ((("commonName", "mail01.lab.test"),),),
    "subjectAltName": (("DNS", "mail01.lab.test"), ("DNS", "MTA-STS.example-a.test"),
                       ("IP Address", "198.18.0.11")),
    "notAfter": "Jun  1 00:00:00 2031 GMT",
}


def test_cert_names_are_dns_sans_only():
    assert mc.cert_names(PEERCERT) == ["mail01.lab.test", "mta-sts.example-a.test"]
    assert mc.cert_names({}) == []
    assert mc.cert_common_name(PEERCERT) == "mail01.lab.test"


@pytest.mark.parametrize("host,pattern,ok", [
    ("mail01.lab.test", "mail01.lab.test", True),
    ("Mail01.Lab.Test.", "mail01.lab.test", True),
    ("mail01.lab.test", "mail02.lab.test", False),
    ("mail01.lab.test", "*.lab.test", True),
    ("a.mail01.lab.test", "*.lab.test", False),    # one label only
    ("lab.test", "*.lab.test", False),             # the wildcard needs a label
    ("mail01.lab.test", "mail*.lab.test", False),  # partial wildcards are not honoured
    ("mail01.lab.test", "*.*.test", False),
    ("lab.test", "*.test", False),                 # no wildcard over a TLD
    ("mail01.lab.test", "lab.test", False),
    ("", "mail01.lab.test", False),
])
def test_name_matches(host, pattern, ok):
    assert mc.name_matches(host, pattern) is ok


def test_cert_verdict():
    ok, detail = mc.cert_verdict("mail01.lab.test", PEERCERT)
    assert ok and "certificate names mail01.lab.test" in detail and "2031" in detail
    ok, detail = mc.cert_verdict("mail02.lab.test", PEERCERT)
    assert not ok
    assert detail == "certificate does not name mail02.lab.test: SAN mail01.lab.test, mta-sts.example-a.test"
    ok, detail = mc.cert_verdict("mail01.lab.test", {"subject": ((("commonName", "mail01.lab.test"),),)})
    assert not ok and "no DNS subjectAltName (CN=mail01.lab.test)" in detail


# --- FCrDNS -----------------------------------------------------------------------------------

def test_fcrdns_pass_with_trailing_dot_and_case():
    ok, detail = mc.fcrdns_verdict("mail01.lab.test", "198.18.0.11", ["198.18.0.11"], ["MAIL01.lab.test."])
    assert ok and detail == "A mail01.lab.test = 198.18.0.11; PTR 198.18.0.11 = mail01.lab.test"


def test_fcrdns_ptr_mismatch():
    ok, detail = mc.fcrdns_verdict("mail01.lab.test", "198.18.0.11", ["198.18.0.11"], ["mail02.lab.test."])
    assert not ok and detail == "PTR 198.18.0.11 = mail02.lab.test, not mail01.lab.test"


def test_fcrdns_a_mismatch_and_missing_ptr():
    ok, detail = mc.fcrdns_verdict("mail02.lab.test", "198.18.0.11", ["198.18.0.12"], [],
                                   ptr_error="NXDOMAIN")
    assert not ok
    assert detail == "A mail02.lab.test = 198.18.0.12, not 198.18.0.11; PTR 198.18.0.11: NXDOMAIN"


def test_fcrdns_one_of_several_a_records_and_extra_ptr():
    ok, detail = mc.fcrdns_verdict("mx.example.test", "192.0.2.1", ["192.0.2.9", "192.0.2.1"],
                                   ["mx.example.test.", "other.example.test."])
    assert ok and "(also PTR other.example.test)" in detail


def test_fcrdns_dns_error():
    ok, detail = mc.fcrdns_verdict("mx.example.test", "192.0.2.1", [], [], a_error="DNS timeout",
                                   ptr_error="DNS timeout")
    assert not ok and detail == "A mx.example.test: DNS timeout; PTR 192.0.2.1: DNS timeout"


# --- folding, table, arguments ----------------------------------------------------------------

def test_steps_verdict_puts_failures_first():
    assert mc.steps_verdict([(True, "a"), (True, "b")]) == (True, "a; b")
    assert mc.steps_verdict([(True, "a"), (False, "b"), (False, "c")]) == (False, "b; c")


def test_result_shape():
    assert mc.result("fcrdns", 1, 5) == {"check": "fcrdns", "ok": True, "detail": "5"}


def test_table_lines_and_summary():
    results = [mc.result("smtp-25", True, "banner 220 mail01.lab.test ESMTP"),
               mc.result("closed-143", False, "port 143 is OPEN")]
    text = mc.table(results)
    lines = text.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "DETAIL"]
    assert lines[1] == "smtp-25     PASS    banner 220 mail01.lab.test ESMTP"
    assert lines[2] == "closed-143  FAIL    port 143 is OPEN"
    assert lines[3] == "1/2 checks passed, 1 FAILED"


def test_table_accepts_json_and_treats_non_true_ok_as_fail():
    text = mc.table('[{"check": "x", "ok": "yes", "detail": ""}]')
    assert "FAIL" in text and text.endswith("0/1 checks passed, 1 FAILED")
    assert mc.table([]).endswith("0/0 checks passed")


def test_select_and_ports():
    assert mc.select(None) == list(mc.CHECK_GROUPS)
    assert mc.select("relay, smtp") == ["smtp", "relay"]
    with pytest.raises(ValueError, match="unknown check"):
        mc.select(["smtp", "pop3"])
    assert mc.merge_ports({"imaps": "143", "closed": 110}) == {
        "smtp": 25, "submission": 587, "imaps": 143, "closed": [110]}
    assert mc.merge_ports('{"smtp": 2525}')["smtp"] == 2525
    with pytest.raises(ValueError, match="unknown port key"):
        mc.merge_ports({"pop3": 110})
