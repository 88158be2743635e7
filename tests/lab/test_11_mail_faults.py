"""Breaking the mail host on purpose: the seed's sabotage, bad pillar, a database outage."""
import json
import time

import pytest

from conftest import state_failures
from mailtools import PASSWORDS, log_lines, maildir_files_with, swaks, tag, wait_for_mail

MAIL01 = "mail01.lab.test"
SABOTAGE = {"mailfleet": {"postfix": {"main": {"myhostname": "fake.example-a.test"}}}}


def apply_mail01(lab, pillar=None, timeout=600):
    args = ["mail01.lab.test", "state.apply"]
    if pillar is not None:
        args.append(f"pillar={json.dumps(pillar)}")
    return lab.salt(*args, timeout=timeout)


def queue_ids(lab, host):
    out = lab.run(host, "postqueue", "-j", check=False).stdout
    return [json.loads(line)["queue_id"] for line in out.splitlines() if line.strip()]


def test_sabotage_unresolvable_hostname_is_refused_by_the_peer_then_flows_when_fixed(lab, converged):
    # The seed's exercise: mail01 says HELO with a name that does not resolve.
    ret = apply_mail01(lab, SABOTAGE)
    assert state_failures(ret) == []
    assert lab.run("mail01", "postconf", "-h", "myhostname").stdout.strip() == "fake.example-a.test"
    subject = tag("sabotage")
    proc = swaks(lab, "outside", "--server", MAIL01, "--port", "587", "--tls", "--auth", "PLAIN",
                 "--auth-user", "alice@example-a.test",
                 "--auth-password", PASSWORDS["alice@example-a.test"],
                 "--from", "alice@example-a.test", "--to", "bob@example-b.test",
                 "--header", f"Subject: {subject}")
    assert "250 2.0.0 Ok: queued" in proc.stdout
    deadline = time.monotonic() + 60
    while not (refused := log_lines(lab, "mail02", "Helo command rejected: Host not found")):
        assert time.monotonic() < deadline, "mail02 never refused the unresolvable HELO"
        time.sleep(1)
    assert "<fake.example-a.test>" in refused[-1]
    assert maildir_files_with(lab, "bob@example-b.test", subject) == []
    assert queue_ids(lab, "mail01"), "the refused message must wait in mail01's queue"
    # Fixed: the pillar is back, the queue is flushed, the message flows, nothing bounced.
    assert state_failures(apply_mail01(lab)) == []
    assert lab.run("mail01", "postconf", "-h", "myhostname").stdout.strip() == MAIL01
    lab.run("mail01", "postqueue", "-f")
    assert wait_for_mail(lab, "bob@example-b.test", subject), "the held message never arrived"
    assert log_lines(lab, "mail01", "status=bounced") == []


@pytest.mark.parametrize("host", ["mail01", "mail02"])  # Debian 12 and Debian 13
def test_bad_pillar_fails_naming_the_key_and_keeps_the_last_good_config(lab, converged, host):
    fqdn = f"{host}.lab.test"
    files = ("/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/dovecot/dovecot.conf",
             "/etc/nftables.d/mailfleet.nft")
    before = lab.run(host, "sha256sum", *files).stdout
    cases = {
        "mailfleet:db:sync_password": {"mailfleet": {"db": {"sync_password": ""}}},
        "mailfleet:lookup:dovecot_major": {"mailfleet": {"lookup": {"dovecot_major": "2.5"}}},
        "mailfleet:host:ssh_port": {"mailfleet": {"host": {"ssh_port": 70000}}},
    }
    for key, pillar in cases.items():
        ret = lab.salt(fqdn, "state.apply", f"pillar={json.dumps(pillar)}", timeout=600)
        failures = state_failures(ret)
        assert failures and key in "\n".join(failures), (key, failures)
        states = ret[fqdn]
        ran = [st for st in states.values() if st.get("__id__") != "mailfleet-settings-valid"
               and st.get("changes")]
        assert ran == [], f"{key}: states changed things after a bad pillar: {ran}"
    assert lab.run(host, "sha256sum", *files).stdout == before
    for service in ("postfix", "dovecot", "mariadb", "nginx"):
        lab.run(host, "systemctl", "is-active", "-q", service)


def test_database_down_defers_twenty_messages_and_loses_none(lab, converged):
    subject = tag("dbdown")
    # Start from an empty queue on mail02, so every queued message below is one of ours.
    deadline = time.monotonic() + 60
    while queue_ids(lab, "mail02"):
        assert time.monotonic() < deadline, "mail02's queue does not drain before the test"
        lab.run("mail02", "postqueue", "-f")
        time.sleep(3)
    lab.run("mail01", "systemctl", "stop", "mariadb")
    try:
        for i in range(20):
            lab.run("mail02", "sh", "-c",
                    f"printf 'Subject: {subject} {i:02d}\\n\\nmessage {i}\\n' | "
                    f"sendmail -f bob@example-b.test alice@example-a.test")
        # mail02 tries, mail01 answers with a temporary failure: all 20 wait in mail02's queue.
        deadline = time.monotonic() + 90
        while len(log_lines(lab, "mail02", "status=deferred")) == 0 or len(queue_ids(lab, "mail02")) < 20:
            assert time.monotonic() < deadline, "mail02 did not defer the messages"
            time.sleep(2)
        assert len(queue_ids(lab, "mail02")) == 20
        assert maildir_files_with(lab, "alice@example-a.test", subject) == []
    finally:
        lab.run("mail01", "systemctl", "start", "mariadb")
    # Postfix's mysql client waits retry_interval (60 s) before retrying a failed server,
    # so flush as a postmaster would: again, until the queue drains.
    deadline = time.monotonic() + 180
    while queue_ids(lab, "mail02") and time.monotonic() < deadline:
        lab.run("mail02", "postqueue", "-f")
        time.sleep(10)
    files = wait_for_mail(lab, "alice@example-a.test", subject, count=20, timeout=60)
    assert len(files) == 20
    assert queue_ids(lab, "mail02") == []
    assert log_lines(lab, "mail02", "status=bounced") == []
    temp = [l for l in log_lines(lab, "mail01", "NOQUEUE: reject") if "4.3.0" in l or "451" in l]
    assert temp, "mail01 should have answered with a temporary (4xx) failure"
