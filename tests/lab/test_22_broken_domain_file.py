"""A typo in a domain file never takes its domain offline (issue 14, finding 3).

The lab master's ext_pillar reads the committed pillar/domains/ folder. This test breaks
example-a.test's file there with a YAML typo (the original bytes are restored in `finally`),
and a postmaster's highstate of mail01 follows: the ext_pillar refuses the file with a
``pillar_refused`` alert naming it and keeps serving its last good version, so mail01 still
accepts alice's mail and her IMAPS login works. The fixed file (with a new alias) applies."""
import random
from pathlib import Path

import pytest

from conftest import state_failures
from mailtools import imap_subjects, swaks, tag, wait_for_mail
from test_55_dnsbl import wait, webhook

H1 = "mail01.lab.test"
ALICE = "alice@example-a.test"
FILE = Path(__file__).resolve().parents[2] / "pillar" / "domains" / "example-a.test.yaml"


def send(lab, rcpt, subject):
    proc = swaks(lab, "outside", "--server", H1, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "someone@outside.lab.test", "--to", rcpt, "--header", f"Subject: {subject}",
                 check=False)
    return proc.stdout


@pytest.fixture
def domain_file(lab, converged):
    original = FILE.read_bytes()
    try:
        yield original.decode()
    finally:
        FILE.write_bytes(original)
        ret = lab.salt(H1, "state.apply", "mail.vusers", timeout=600)
        assert not state_failures(ret), state_failures(ret)


def test_a_typo_in_a_domain_file_keeps_the_domain_in_service_and_the_fix_applies(lab, domain_file, webhook):
    # a typo: an unclosed flow sequence (comment lines first, so that this version's error
    # differs from an earlier run's and the master alerts again)
    broken = "#\n" * random.randint(1, 40) + domain_file.replace(
        "      quota: 1G\n", "      quota: 1G\n      catchall: [alice@example-a.test\n")
    assert broken != domain_file
    FILE.write_text(broken)
    ret = lab.salt(H1, "state.apply", timeout=900)
    assert not state_failures(ret), state_failures(ret)
    hosts = lab.salt(H1, "pillar.get", "mailfleet:domains:example-a.test:hosts", "unmask=True")[H1]
    assert hosts == [H1], "example-a.test left mail01's pillar"
    got = wait(lambda: [a for a in webhook if a["kind"] == "pillar_refused"
                        and a["details"]["file"] == str(FILE)], 60, "the pillar_refused alert")
    assert "last good version kept" in got[0]["message"]
    # the domain is served as before: mail for alice accepted and delivered, her login works
    subject = tag("typo")
    out = send(lab, ALICE, subject)
    assert "250 2.0.0 Ok: queued" in out, out[-1500:]
    assert wait_for_mail(lab, ALICE, subject)
    assert imap_subjects(lab, "outside", H1, ALICE, subject) == [f"Subject: {subject}"]

    # the fix, with a change: a new alias of alice's, applied
    fixed = domain_file.replace("        info: [alice@example-a.test]\n",
                                "        info: [alice@example-a.test]\n        typo-fixed: [alice@example-a.test]\n")
    assert fixed != domain_file
    FILE.write_text(fixed)
    ret = lab.salt(H1, "state.apply", "mail.vusers", timeout=600)
    assert not state_failures(ret), state_failures(ret)
    subject = tag("typo-fixed")
    out = send(lab, "typo-fixed@example-a.test", subject)
    assert "250 2.0.0 Ok: queued" in out, out[-1500:]
    assert wait_for_mail(lab, ALICE, subject)
