"""The mail host, converged from pillar and proven the way the seed article does it."""
import time

from conftest import state_changes, state_failures
from mailtools import (PASSWORDS, imap_subjects, log_lines, maildir_files_with, swaks, tag,
                       wait_for_mail)

MAIL01 = "mail01.lab.test"


def test_fresh_hosts_converge_and_a_second_apply_changes_nothing(lab, converged, record_property):
    t0 = time.monotonic()
    again = lab.salt("*mail*", "state.apply", timeout=600)
    record_property("first_apply_seconds", round(converged["first_apply_seconds"], 1))
    record_property("noop_apply_seconds", round(time.monotonic() - t0, 1))
    assert state_failures(again) == []
    assert state_changes(again) == []


def test_mail_from_outside_lands_in_the_maildir_and_imaps_reads_it(lab, converged):
    subject = tag("inbound")
    proc = swaks(lab, "outside", "--server", MAIL01, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "someone@outside.lab.test", "--to", "alice@example-a.test",
                 "--header", f"Subject: {subject}", "--body", "hello from outside")
    assert "250 2.0.0 Ok: queued" in proc.stdout
    files = wait_for_mail(lab, "alice@example-a.test", subject)
    assert len(files) == 1 and files[0].startswith("/var/vmail/example-a.test/alice/new/")
    owner = lab.run("mail01", "stat", "-c", "%U %a", files[0]).stdout.split()
    assert owner[0] == "vmail"
    assert imap_subjects(lab, "outside", MAIL01, "alice@example-a.test", subject) == [f"Subject: {subject}"]


def test_submission_587_as_alice_delivers_to_bob_on_mail02(lab, converged):
    subject = tag("submit")
    proc = swaks(lab, "outside", "--server", MAIL01, "--port", "587", "--tls",
                 "--auth", "PLAIN", "--auth-user", "alice@example-a.test",
                 "--auth-password", PASSWORDS["alice@example-a.test"],
                 "--from", "alice@example-a.test", "--to", "bob@example-b.test",
                 "--header", f"Subject: {subject}")
    assert "235 2.7.0 Authentication successful" in proc.stdout
    assert wait_for_mail(lab, "bob@example-b.test", subject), "bob never got the message"
    assert imap_subjects(lab, "outside", "mail02.lab.test", "bob@example-b.test", subject) == [f"Subject: {subject}"]


def test_submission_refuses_auth_before_starttls_and_a_wrong_password(lab, converged):
    plain = swaks(lab, "outside", "--server", MAIL01, "--port", "587", "--auth", "PLAIN",
                  "--auth-user", "alice@example-a.test", "--auth-password", PASSWORDS["alice@example-a.test"],
                  "--from", "alice@example-a.test", "--to", "bob@example-b.test", check=False)
    assert plain.returncode != 0
    # AUTH is not even offered before STARTTLS, and sending without it is refused.
    assert "250-AUTH" not in plain.stdout and "STARTTLS" in plain.stdout
    wrong = swaks(lab, "outside", "--server", MAIL01, "--port", "587", "--tls", "--auth", "PLAIN",
                  "--auth-user", "alice@example-a.test", "--auth-password", "not-her-password",
                  "--from", "alice@example-a.test", "--to", "bob@example-b.test", check=False)
    assert wrong.returncode != 0 and "535 5.7.8" in wrong.stdout


def test_open_relay_attempt_from_outside_is_refused_and_logged(lab, converged):
    proc = swaks(lab, "outside", "--server", MAIL01, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "spammer@outside.lab.test", "--to", "victim@elsewhere.test", check=False)
    assert proc.returncode != 0
    assert "Relay access denied" in proc.stdout
    time.sleep(1)
    lines = log_lines(lab, "mail01", "<victim@elsewhere.test>: Relay access denied")
    assert lines and "[198.18.0.100]" in lines[-1]


def _reachable(lab, client, ip, port):
    return lab.run(client, "nc", "-z", "-w", "3", ip, str(port), check=False).returncode == 0


def test_firewall_drops_every_port_but_the_mail_ones(lab, converged):
    ip = lab.ip("mail01")
    # A real listener on a port outside the allowed list: up locally, unreachable from outside.
    pid = lab.run("mail01", "sh", "-c", "python3 -m http.server 8025 >/dev/null 2>&1 & echo $!").stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while not _reachable(lab, "mail01", "127.0.0.1", 8025):
            assert time.monotonic() < deadline, "test listener did not start"
            time.sleep(0.2)
        assert not _reachable(lab, "outside", ip, 8025)
    finally:
        lab.run("mail01", "kill", pid, check=False)
    for port in (143, 110):
        assert not _reachable(lab, "outside", ip, port)
    for port in (25, 587, 993, 465):
        assert _reachable(lab, "outside", ip, port)
    listeners = lab.run("mail01", "ss", "-ltnH").stdout
    assert ":143 " not in listeners and ":110 " not in listeners


def test_reapplying_the_firewall_keeps_the_ban_sets(lab, converged):
    lab.run("mail01", "nft", "add", "element", "inet", "mailfleet", "banned_v4",
            "{ 198.19.7.7 timeout 1h }")
    lab.run("mail01", "sh", "-c", "nft -f /etc/nftables.d/mailfleet.nft")
    elements = lab.run("mail01", "nft", "list", "set", "inet", "mailfleet", "banned_v4").stdout
    assert "198.19.7.7" in elements
    lab.run("mail01", "nft", "delete", "element", "inet", "mailfleet", "banned_v4", "{ 198.19.7.7 }")
