"""A bare Debian 13 host added to the running lab (issue 16, item 3), as a postmaster grows
the fleet: `labctl add mail03 --release trixie` boots it, accepts its key deliberately (only
the key made for it) and names it in DNS; a domain file lists it; the plain first
`salt '*mail*' state.apply` converges it and a second changes nothing on it; it takes its
domain's mail and serves it over IMAPS; `labctl remove` takes it out again. Last before the
lab goes down: the other tests never see mail03."""
import json
import subprocess
import sys
import time

import pytest

from conftest import REPO, salt_plain, state_changes, state_failures
from mailtools import PASSWORDS, swaks, tag
from mflab import fleet

HOST, FQDN = "mail03", "mail03.lab.test"
DOMAIN = "example-c.test"
CAROL = f"carol@{DOMAIN}"
LABCTL = [sys.executable, str(REPO / "lab" / "labctl.py")]
# bob's hash, reused for carol: the lab's plain-text passwords stay in passwords.json
BOB_HASH = ("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$R2rWrzQsUalWSAA41QpprQ$"
            "fHQ5LDz0S3v2WR6cQpn78y9h1ge0PiEOx+r9i29cpsk")


@pytest.fixture(scope="module")
def mail03(lab, converged):
    domain_file = fleet.EXTRA_DOMAINS / f"{DOMAIN}.yaml"
    domain_file.write_text("mailfleet:\n  domains:\n    %s:\n      hosts: [%s]\n      mailboxes:\n"
                           "        carol: {name: Carol Example, password: \"%s\"}\n" % (DOMAIN, FQDN, BOB_HASH))
    t0 = time.monotonic()
    proc = subprocess.run(LABCTL + ["add", HOST, "--release", "trixie"], capture_output=True, text=True, timeout=900)
    added = time.monotonic() - t0
    try:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield {"added_seconds": added}
    finally:
        subprocess.run(LABCTL + ["remove", HOST], capture_output=True, text=True, timeout=300)
        domain_file.unlink(missing_ok=True)


def test_the_added_host_is_in_dns_and_only_its_own_key_was_accepted(lab, mail03):
    assert lab.run("outside", "dig", "+short", FQDN).stdout.split() == ["198.18.0.13"]
    assert lab.run("outside", "dig", "+short", "-x", "198.18.0.13").stdout.split() == [f"{FQDN}."]
    keys = json.loads(subprocess.run([str(fleet.VENV_BIN / "salt-key"), "--out=json", "-L"], cwd=REPO,
                                     capture_output=True, text=True).stdout)
    assert FQDN in keys["minions"] and not keys["minions_pre"] and not keys["minions_rejected"]
    assert fleet.load_state()["hosts"][HOST]["release"] == "trixie"
    assert lab.run(HOST, "cat", "/etc/debian_version").stdout.startswith("13.")


def test_a_bare_debian_13_host_converges_with_the_plain_first_highstate_and_the_second_changes_nothing(
        lab, mail03, record_property):
    t0 = time.monotonic()
    code, ret, out = salt_plain("*mail*", "state.apply")
    first = time.monotonic() - t0
    assert FQDN in ret and state_failures(ret) == [], out[-4000:]
    assert code == 0, out[-4000:]
    t0 = time.monotonic()
    again = lab.salt(FQDN, "state.apply", timeout=600)
    record_property("mail03_first_apply_seconds", round(first, 1))
    record_property("mail03_noop_apply_seconds", round(time.monotonic() - t0, 1))
    assert state_failures(again) == []
    assert state_changes(again) == []
    # the release's own daemons run the rendered configuration
    assert lab.run(HOST, "dovecot", "--version").stdout.startswith("2.4.")
    assert "dovecot_config_version = 2.4.0" in lab.run(HOST, "doveconf", "-n").stdout
    assert lab.run(HOST, "postconf", "-h", "mail_version").stdout.startswith("3.10")


def test_the_added_host_takes_its_domains_mail_and_serves_it_over_imaps(lab, mail03):
    subject = tag("mail03")
    proc = swaks(lab, "outside", "--server", FQDN, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "someone@outside.lab.test", "--to", CAROL, "--header", f"Subject: {subject}")
    assert "250 2.0.0 Ok: queued" in proc.stdout
    fetch = ("import imaplib, json, ssl, sys, time\n"
             "for _ in range(60):\n"
             "    imap = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ssl.create_default_context())\n"
             "    imap.login(sys.argv[2], sys.argv[3]); imap.select('INBOX')\n"
             "    found = imap.search(None, 'SUBJECT', '\"%s\"' % sys.argv[4])[1][0].split()\n"
             "    imap.logout()\n"
             "    if found: break\n"
             "    time.sleep(1)\n"
             "print(json.dumps(len(found)))\n")
    out = lab.run("outside", "python3", "-c", fetch, FQDN, CAROL, PASSWORDS["bob@example-b.test"], subject,
                  timeout=120)
    assert json.loads(out.stdout) == 1


def test_a_removed_host_leaves_no_key_and_no_dns_name(lab, mail03):
    # (runs last in this module; the fixture's own removal is then a no-op)
    proc = subprocess.run(LABCTL + ["remove", HOST], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert HOST not in fleet.load_state()["hosts"]
    assert lab.run("outside", "dig", "+short", FQDN).stdout.strip() == ""
    keys = subprocess.run([str(fleet.VENV_BIN / "salt-key"), "-L"], cwd=REPO, capture_output=True, text=True).stdout
    assert FQDN not in keys
