"""
Quotas refused in the SMTP dialogue, and password hashes from mailfleet's helper, in the lab,
on each release: every test runs on mail01 (Debian 12, Dovecot 2.3) and on mail02 (Debian 13,
Dovecot 2.4, whose quota settings and quota-status service are written differently).

A test domain (quota21.test, served by the host under test) is onboarded through a domain
file in the lab master's second ext_pillar folder and removed again at the end (file deleted,
the host re-applied, its maildirs wiped so a re-run starts clean):

- full@    8 KiB quota: under quota it receives; filled past it, a message from `outside`
           gets 552 5.2.2 at RCPT, nothing is queued and no bounce is made on mail01.
- small@   8 KiB quota, empty: a message declared (SIZE=) bigger than that is refused at
           RCPT; an undeclared one passes RCPT and is deferred (4.2.2) by LMTP, not bounced.
- pwuser@  no quota (0 = unlimited); its pillar hash comes from the master's runner; it
           logs into IMAPS, and a new hash in the domain file changes its password at the
           next state.apply.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, state_changes, state_failures
from mailtools import swaks, tag
from mflab import fleet

DOMAIN = "quota21.test"
FULL = f"full@{DOMAIN}"
SMALL = f"small@{DOMAIN}"
PWUSER = f"pwuser@{DOMAIN}"
QUOTA = 8192
VENV_BIN = Path(sys.executable).parent
SCHEMES = ("ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT")


def runner_hash(password: str, scheme: str = "ARGON2ID") -> str:
    """salt-run mailfleet_password.hash on the master, the password on stdin (no argument)."""
    proc = subprocess.run([str(VENV_BIN / "salt-run"), "--out=json", "mailfleet_password.hash",
                           f"scheme={scheme}"], input=password + "\n", cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert password not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module", params=["mail01", "mail02"])
def host(request, lab, converged):
    """The host under test: name, FQDN, Dovecot major version."""
    name = request.param
    major = lab.run(name, "dovecot", "--version").stdout[:3]
    return {"name": name, "fqdn": f"{name}.lab.test", "dovecot": major}


def write_domain(host, pw_hash: str) -> None:
    data = {"mailfleet": {"domains": {DOMAIN: {
        "hosts": [host["fqdn"]], "description": "quota and password lab test (test_21)",
        "mailboxes": {
            "full": {"name": "Over Quota", "password": pw_hash, "quota": QUOTA},
            "small": {"name": "Small Quota", "password": pw_hash, "quota": QUOTA},
            "pwuser": {"name": "Password Helper", "password": pw_hash},
        }}}}}
    path = fleet.EXTRA_DOMAINS / f"{DOMAIN}.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))  # JSON is YAML
    tmp.replace(path)                           # the ext_pillar never reads half a file


def apply_host(lab, host, **pillar):
    args = [host["fqdn"], "state.apply"]
    if pillar:
        args.append("pillar=" + json.dumps(pillar))
    ret = lab.salt(*args)
    assert state_failures(ret) == [], state_failures(ret)
    return ret


def wipe_maildirs(lab, host):
    lab.run(host["name"], "rm", "-rf", f"/var/vmail/{DOMAIN}")


@pytest.fixture(scope="module")
def passwords():
    return {"first": f"{tag('pw1')} one", "second": f"{tag('pw2')} two"}


@pytest.fixture(scope="module")
def onboarded(lab, host, passwords):
    wipe_maildirs(lab, host)                    # leftovers of an interrupted run
    write_domain(host, runner_hash(passwords["first"]))
    apply_host(lab, host)
    yield
    (fleet.EXTRA_DOMAINS / f"{DOMAIN}.yaml").unlink(missing_ok=True)
    apply_host(lab, host)
    wipe_maildirs(lab, host)


def send(lab, host, rcpt, sender, subject="t21", check=False):
    return swaks(lab, "outside", "--server", host["fqdn"], "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", sender, "--to", rcpt, "--header", f"Subject: {subject}", check=check)


def rcpt_reply(dialogue: str) -> str:
    lines = dialogue.splitlines()
    i = next(i for i, line in enumerate(lines) if "RCPT TO:" in line)
    return lines[i + 1]


def master_pids(lab, host):
    return lab.run(host["name"], "sh", "-c", "cat /run/dovecot/master.pid; "
                   "cat /var/spool/postfix/pid/master.pid").stdout.split()


def quota_bytes(lab, host, user):
    """(used, limit) in bytes from doveadm quota get (which prints KiB)."""
    out = lab.run(host["name"], "doveadm", "-f", "tab", "quota", "get", "-u", user).stdout
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[1] == "STORAGE":
            return int(fields[2]) * 1024, (None if fields[3] == "-" else int(fields[3]) * 1024)
    raise AssertionError(out)


def fill(lab, host, user, nbytes):
    """Store a message of about nbytes in the mailbox past its quota, as an administrator
    would: 2.3's doveadm save with the quota plugin switched off for this one command; on 2.4
    (whose userdb quota wins over -o) a file put into the maildir, then a quota recount."""
    body = ("x" * 75 + "\n") * (nbytes // 76 + 1)
    msg = f"From: filler@{DOMAIN}\nSubject: filler\n\n{body}"
    if host["dovecot"] == "2.3":
        lab.run(host["name"], "doveadm", "-o", "plugin/quota=", "save", "-u", user, input=msg)
        return
    local = user.split("@")[0]
    path = f"/var/vmail/{DOMAIN}/{local}/cur/{tag('fill')}.{int(time.time())}.filler:2,S"
    lab.run(host["name"], "sh", "-c", f"cat > {path} && chown vmail:vmail {path}", input=msg)
    lab.run(host["name"], "doveadm", "force-resync", "-u", user, "INBOX")
    lab.run(host["name"], "doveadm", "quota", "recalc", "-u", user)


def userdb_quota(host, nbytes: int) -> str:
    """The userdb field that carries the mailbox quota, as `doveadm user` prints it."""
    if host["dovecot"] == "2.3":
        return f"quota_rule\t*:bytes={nbytes}"
    return f"quota_storage_size\t{nbytes}"


# --- quotas ----------------------------------------------------------------------------------

def test_the_mailbox_quota_reaches_dovecot(lab, host, onboarded):
    user = lab.run(host["name"], "doveadm", "user", FULL).stdout
    assert userdb_quota(host, QUOTA) in user
    assert quota_bytes(lab, host, FULL)[1] == QUOTA
    # 0 in the database (no quota in pillar) is unlimited
    assert userdb_quota(host, 0) in lab.run(host["name"], "doveadm", "user", PWUSER).stdout
    assert quota_bytes(lab, host, PWUSER)[1] is None


def test_over_quota_is_refused_in_the_smtp_dialogue_without_a_bounce(lab, host, onboarded, record_property):
    under = send(lab, host, FULL, f"{tag('t21u')}@outside.lab.test")
    assert "250 2.0.0 Ok: queued" in under.stdout, under.stdout     # under quota: accepted
    deadline = time.monotonic() + 30
    while quota_bytes(lab, host, FULL)[0] == 0:
        assert time.monotonic() < deadline, "the accepted message never arrived"
        time.sleep(1)

    fill(lab, host, FULL, 2 * QUOTA)
    used, limit = quota_bytes(lab, host, FULL)
    assert used > limit
    record_property("full_used_bytes", used)

    sender = f"{tag('t21o')}@outside.lab.test"
    t0 = time.monotonic()
    over = send(lab, host, FULL, sender)
    record_property("refusal_seconds", round(time.monotonic() - t0, 2))
    assert over.returncode != 0
    reply = rcpt_reply(over.stdout)
    assert "552 5.2.2" in reply and "Mailbox is full" in reply, over.stdout
    assert "DATA" not in over.stdout.split("RCPT TO:")[1]           # refused before DATA

    # Nothing entered the queue for it, so nothing can bounce: the only log line that names
    # the sender is the SMTP-time reject, and no bounce or queued message mentions it.
    time.sleep(3)
    lines = lab.run(host["name"], "grep", "-F", "--", sender, "/var/log/mail.log", check=False).stdout.splitlines()
    assert len(lines) == 1 and "NOQUEUE: reject: RCPT from" in lines[0] and "552 5.2.2" in lines[0], lines
    queue = lab.run(host["name"], "postqueue", "-j").stdout
    assert sender not in queue and FULL not in queue, queue
    bounces = lab.run(host["name"], "grep", "-E", "postfix/bounce.*sender non-delivery",
                      "/var/log/mail.log", check=False).stdout
    assert sender not in bounces

    # Other recipients are untouched: the unlimited mailbox still receives, and relaying
    # for a foreign domain is still refused (smtpd_relay_restrictions come first).
    ok = send(lab, host, PWUSER, f"{tag('t21p')}@outside.lab.test")
    assert "250 2.0.0 Ok: queued" in ok.stdout, ok.stdout
    relay = send(lab, host, "victim@elsewhere.test", f"{tag('t21r')}@outside.lab.test")
    assert "Relay access denied" in rcpt_reply(relay.stdout), relay.stdout


SIZED_SEND = r"""
import smtplib, sys
rcpt, sender, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = smtplib.SMTP(sys.argv[4], 25, local_hostname="outside.lab.test", timeout=20)
s.ehlo()
assert s.has_extn("size")
msg = "Subject: sized\r\n\r\n" + ("z" * 75 + "\r\n") * (size // 77 + 1)
try:
    s.sendmail(sender, [rcpt], msg)            # smtplib declares SIZE= in MAIL FROM
    print("250 accepted")
except smtplib.SMTPRecipientsRefused as exc:
    code, text = exc.recipients[rcpt]
    print(code, text.decode())
s.quit()
"""


def test_a_message_bigger_than_the_room_left(lab, host, onboarded):
    # Declared size: quota-status adds it to the usage, so the refusal comes at RCPT.
    sender = f"{tag('t21s')}@outside.lab.test"
    out = lab.run("outside", "python3", "-c", SIZED_SEND, SMALL, sender, str(3 * QUOTA), host["fqdn"]).stdout
    assert out.startswith("552 5.2.2") and "Mailbox is full" in out, out
    # Undeclared: RCPT cannot know; LMTP refuses the save with 452 4.2.2 and Postfix keeps
    # the message queued (quota_full_tempfail) instead of bouncing it.
    sender = f"{tag('t21l')}@outside.lab.test"
    big = ("y" * 75 + "\n") * (3 * QUOTA // 76)
    proc = lab.run("outside", "swaks", "--hide-informational", "--timeout", "20", "--server", host["fqdn"],
                   "--port", "25", "--ehlo", "outside.lab.test", "--from", sender, "--to", SMALL,
                   "--body", "-", input=big, timeout=90)
    assert "250 2.0.0 Ok: queued" in proc.stdout, proc.stdout
    deadline = time.monotonic() + 30
    while True:
        queue = [json.loads(line) for line in lab.run(host["name"], "postqueue", "-j").stdout.splitlines()]
        mine = [q for q in queue if q["sender"] == sender]
        if mine and mine[0]["recipients"][0].get("delay_reason"):
            break
        assert time.monotonic() < deadline, queue
        time.sleep(1)
    try:
        assert "452 4.2.2" in mine[0]["recipients"][0]["delay_reason"], mine
        assert quota_bytes(lab, host, SMALL)[0] == 0
        bounces = lab.run(host["name"], "grep", "-E", "postfix/bounce.*sender non-delivery",
                          "/var/log/mail.log", check=False).stdout
        assert sender not in bounces
    finally:
        lab.run(host["name"], "postsuper", "-d", mine[0]["queue_id"])


def test_the_reply_comes_from_pillar_and_a_change_reloads_not_restarts(lab, host, onboarded):
    if quota_bytes(lab, host, FULL)[0] <= QUOTA:
        fill(lab, host, FULL, 2 * QUOTA)
    before = master_pids(lab, host)
    ret = apply_host(lab, host, mailfleet={"quota": {"overquota_reply": "452 4.2.2 Mailbox is full, try later"}})
    changed = {st["__id__"] for st in ret[host["fqdn"]].values() if st.get("changes")}
    assert "mailfleet-dovecot-conf" in changed, changed
    try:
        assert master_pids(lab, host) == before, "Dovecot or Postfix was restarted, not reloaded"
        deferred = send(lab, host, FULL, f"{tag('t21d')}@outside.lab.test")
        assert "452 4.2.2" in rcpt_reply(deferred.stdout), deferred.stdout
    finally:
        apply_host(lab, host)
    assert master_pids(lab, host) == before
    assert "552 5.2.2" in rcpt_reply(send(lab, host, FULL, f"{tag('t21e')}@outside.lab.test").stdout)
    again = apply_host(lab, host)
    assert state_changes(again) == []                 # converged: the next apply is a no-op


# --- password hashes ------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", SCHEMES)
def test_runner_hashes_verify_with_doveadm(lab, host, scheme):
    password = f"{tag('pw')} ünïcode"
    hashed = runner_hash(password, scheme)
    assert hashed.startswith("{" + scheme + "}")
    ok = lab.run(host["name"], "doveadm", "pw", "-t", hashed, input=password + "\n")
    assert ok.stdout.strip() == f"{hashed} (verified)"
    bad = lab.run(host["name"], "doveadm", "pw", "-t", hashed, input=password + "x\n", check=False)
    assert bad.returncode != 0 and "verification check failed" in bad.stderr


@pytest.mark.parametrize("scheme", SCHEMES)
def test_module_hashes_on_the_host_and_verifies(lab, host, scheme):
    password = f"{tag('pwm')} mod"
    ret = lab.salt(host["fqdn"], "mailfleet_password.hash", password, f"scheme={scheme}")[host["fqdn"]]
    assert isinstance(ret, str) and ret.startswith("{" + scheme + "}"), ret
    assert lab.salt(host["fqdn"], "mailfleet_password.verify", password, ret)[host["fqdn"]] is True
    assert lab.salt(host["fqdn"], "mailfleet_password.verify", password + "x", ret)[host["fqdn"]] is False


IMAP_LOGIN = r"""
import imaplib, ssl, sys
imap = imaplib.IMAP4_SSL(sys.argv[1], 993, ssl_context=ssl.create_default_context())
try:
    imap.login(sys.argv[2], sys.stdin.readline().rstrip("\n"))
except imaplib.IMAP4.error as exc:
    print("REFUSED", exc)
    sys.exit(1)
imap.select("INBOX")
imap.logout()
print("OK")
"""


def imap_login(lab, host, user, password) -> bool:
    proc = lab.run("outside", "python3", "-c", IMAP_LOGIN, host["fqdn"], user,
                   input=password + "\n", check=False)
    assert proc.stdout.strip().startswith(("OK", "REFUSED")), proc.stderr[-2000:]
    return proc.returncode == 0


def test_a_runner_hash_in_pillar_logs_into_imaps_and_a_new_one_changes_the_password(
        lab, host, onboarded, passwords):
    assert imap_login(lab, host, PWUSER, passwords["first"])
    assert not imap_login(lab, host, PWUSER, passwords["second"])

    write_domain(host, runner_hash(passwords["second"], "BLF-CRYPT"))
    ret = apply_host(lab, host)
    assert [c for c in state_changes(ret) if "mailfleet-virtual-users" in c], state_changes(ret)
    assert imap_login(lab, host, PWUSER, passwords["second"])
    assert not imap_login(lab, host, PWUSER, passwords["first"])
