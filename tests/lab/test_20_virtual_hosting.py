"""Onboarding by pillar edit: one domain file, its hosts, and nothing lost on removal."""
import json
import time
from pathlib import Path

import pytest

from conftest import state_failures
from mailtools import swaks, tag, wait_for_mail
from mflab import fleet

DOMAIN = "example-c.test"
# carol reuses bob's lab hash (password in tests/lab/passwords.json under bob's address).
BOB_HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$R2rWrzQsUalWSAA41QpprQ$fHQ5LDz0S3v2WR6cQpn78y9h1ge0PiEOx+r9i29cpsk"


def domain_file(mailboxes: dict) -> str:
    data = {"mailfleet": {"domains": {DOMAIN: {
        "hosts": ["mail02.lab.test"], "description": "onboarded by a test",
        "mailboxes": {name: {"name": name.title(), "password": BOB_HASH} for name in mailboxes}}}}}
    return json.dumps(data, indent=2)  # JSON is YAML


@pytest.fixture
def onboarded(lab, converged):
    path = fleet.EXTRA_DOMAINS / f"{DOMAIN}.yaml"
    path.write_text(domain_file({"carol": {}, "dave": {}}))
    yield path
    path.unlink(missing_ok=True)
    assert state_failures(lab.salt("mail02.lab.test", "state.apply")) == []


def send(lab, server, rcpt, subject, check=True):
    return swaks(lab, "outside", "--server", server, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "someone@outside.lab.test", "--to", rcpt,
                 "--header", f"Subject: {subject}", check=check)


def test_a_new_domain_file_onboards_on_its_host_only(lab, onboarded):
    t0 = time.monotonic()
    ret = lab.salt("*mail*", "state.apply")
    assert state_failures(ret) == []
    subject = tag("onboard")
    proc = send(lab, "mail02.lab.test", f"carol@{DOMAIN}", subject)
    assert "250 2.0.0 Ok: queued" in proc.stdout
    print(f"onboarding: domain file to first accepted message in {time.monotonic() - t0:.1f}s")
    found = lab.run("mail02", "sh", "-c", f"grep -rl {subject} /var/vmail/{DOMAIN}/carol/new || true").stdout
    deadline = time.monotonic() + 30
    while not found.strip() and time.monotonic() < deadline:
        time.sleep(1)
        found = lab.run("mail02", "sh", "-c", f"grep -rl {subject} /var/vmail/{DOMAIN}/carol/new || true").stdout
    assert found.strip(), "carol never got the message"
    # mail01 does not serve the domain: it refuses to relay for it...
    refused = send(lab, "mail01.lab.test", f"carol@{DOMAIN}", subject, check=False)
    assert refused.returncode != 0 and "Relay access denied" in refused.stdout
    # ...and its pillar holds nothing of it (the hashes went to mail02 only).
    pillar = lab.salt("mail01.lab.test", "pillar.items")["mail01.lab.test"]
    assert DOMAIN not in json.dumps(pillar)
    assert DOMAIN in json.dumps(lab.salt("mail02.lab.test", "pillar.items")["mail02.lab.test"])


def test_a_mailbox_removed_from_pillar_stops_receiving_and_keeps_its_maildir(lab, onboarded):
    assert state_failures(lab.salt("mail02.lab.test", "state.apply")) == []
    subject = tag("before-removal")
    send(lab, "mail02.lab.test", f"dave@{DOMAIN}", subject)
    maildir = f"/var/vmail/{DOMAIN}/dave"
    deadline = time.monotonic() + 30
    while lab.run("mail02", "test", "-d", f"{maildir}/new", check=False).returncode != 0:
        assert time.monotonic() < deadline, "dave's maildir never appeared"
        time.sleep(1)
    onboarded.write_text(domain_file({"carol": {}}))
    ret = lab.salt("mail02.lab.test", "state.apply")
    assert state_failures(ret) == []
    gone = send(lab, "mail02.lab.test", f"dave@{DOMAIN}", tag("after-removal"), check=False)
    assert gone.returncode != 0 and "550 5.1.1" in gone.stdout, gone.stdout
    assert lab.run("mail02", "sh", "-c", f"ls {maildir}/new | wc -l").stdout.strip() != "0"
    row = lab.run("mail02", "mariadb", "-N", "-B", "postfix", "-e",
                  f"SELECT active FROM mailbox WHERE username='dave@{DOMAIN}'").stdout.strip()
    assert row == "0", "removed mailbox must be deactivated, not deleted"
