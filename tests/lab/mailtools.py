"""What a postmaster does by hand in the lab, as functions: send, wait, read, grep logs."""
import json
import time
import uuid
from pathlib import Path

# Plain-text lab passwords live in passwords.json only; pillar holds their ARGON2ID hashes.
PASSWORDS = {k: v for k, v in json.loads((Path(__file__).parent / "passwords.json").read_text()).items()
             if "@" in k}
MAILDIR = {
    "alice@example-a.test": ("mail01", "/var/vmail/example-a.test/alice"),
    "bob@example-b.test": ("mail02", "/var/vmail/example-b.test/bob"),
}


def tag(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def swaks(lab, client: str, *args: str, check: bool = True):
    """swaks on a lab client; returns the CompletedProcess (stdout holds the dialogue)."""
    return lab.run(client, "swaks", "--hide-informational", "--timeout", "20", *args,
                   check=check, timeout=90)


def maildir_files_with(lab, address: str, needle: str) -> list[str]:
    host, path = MAILDIR[address]
    proc = lab.run(host, "sh", "-c", f"grep -rl -F -- '{needle}' {path}/new {path}/cur 2>/dev/null || true")
    return [line for line in proc.stdout.split() if line]


def wait_for_mail(lab, address: str, needle: str, count: int = 1, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = maildir_files_with(lab, address, needle)
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(1)


IMAP_FETCH = r"""
import imaplib, json, ssl, sys
host, user, password, needle = sys.argv[1:5]
imap = imaplib.IMAP4_SSL(host, 993, ssl_context=ssl.create_default_context())
imap.login(user, password)
imap.select("INBOX")
typ, data = imap.search(None, "SUBJECT", '"%s"' % needle)
subjects = []
for num in data[0].split():
    typ, msg = imap.fetch(num, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects.append(msg[0][1].decode().strip())
imap.logout()
print(json.dumps(subjects))
"""


def imap_subjects(lab, client: str, host: str, address: str, needle: str) -> list[str]:
    """Log in over IMAPS (verifying the certificate) from `client`; subjects matching needle."""
    proc = lab.run(client, "python3", "-c", IMAP_FETCH, host, address, PASSWORDS[address], needle)
    return json.loads(proc.stdout)


def log_lines(lab, host: str, needle: str, path: str = "/var/log/mail.log") -> list[str]:
    proc = lab.run(host, "grep", "-F", "--", needle, path, check=False)
    return proc.stdout.splitlines()


def wait(predicate, timeout: float, what: str, step: float = 1):
    """``predicate()``'s first true value within ``timeout`` seconds, polled every ``step``;
    an AssertionError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


DETECTOR_DIR = "/var/lib/mailfleet/watch"  # mailfleet:lookup:watch_dir's default


def detector(lab, host: str) -> tuple[dict, dict]:
    """The settings mail.defense last wrote for a host's detector, and its status (pid, the
    digests of the settings and code it runs)."""
    settings = json.loads(lab.run(host, "cat", f"{DETECTOR_DIR}/settings.json").stdout)
    status = json.loads(lab.run(host, "cat", f"{DETECTOR_DIR}/status.json").stdout)
    return settings, status
