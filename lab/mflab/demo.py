"""`make demo`: the lab up, then every host answering in its own way."""
import json
import subprocess
import ssl
import urllib.request

import dns.resolver

from . import config, fleet
from .fleet import SALT_DIR, VENV_BIN, run_in


def _resolver() -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [f"{config.NET_PREFIX}.2"]
    res.lifetime = 5
    return res


def host_answers(name: str, role: str, ip: str) -> str:
    """What a host says when asked the question its role is for."""
    if role == "master":
        out = subprocess.run([str(VENV_BIN / "salt-run"), "-c", str(SALT_DIR), "--out=json",
                              "manage.up"], capture_output=True, text=True, timeout=60)
        return f"salt-master, minions up: {', '.join(json.loads(out.stdout or '[]')) or 'none'}"
    if role == "dns":
        answer = _resolver().resolve(f"mail01.{config.DOMAIN}", "A")
        return f"BIND: mail01.{config.DOMAIN} A {answer[0]}"
    if role == "acme":
        ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "lab-ca.pem"))
        with urllib.request.urlopen(f"https://{ip}:14000/dir", context=ctx, timeout=10) as resp:
            directory = json.load(resp)
        return f"Pebble: ACME directory with newOrder at {directory['newOrder']}"
    if role == "mail":
        out = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                              f"{name}.{config.DOMAIN}", "grains.item", "osfinger", "saltversion"],
                             capture_output=True, text=True, timeout=60)
        grains = json.loads(out.stdout or "{}").get(f"{name}.{config.DOMAIN}", {})
        return f"salt-minion {grains.get('saltversion')} on {grains.get('osfinger')}"
    uname = run_in(name, ["uname", "-n"]).stdout.strip()
    ping = run_in(name, ["ping", "-c", "1", "-W", "2", f"mail01.{config.DOMAIN}"])
    return f"{uname}: mail01 {'reachable' if ping.returncode == 0 else 'UNREACHABLE'}"


def main() -> int:
    fleet.up()
    state = fleet.load_state()
    rows = [("master", "master", config.MASTER_IP)]
    rows += [(n, h["role"], h["ip"]) for n, h in state["hosts"].items()]
    print()
    failures = 0
    for name, role, ip in rows:
        try:
            said = host_answers(name, role, ip)
        except Exception as err:  # noqa: BLE001 (a demo reports every host, whatever one of them does)
            said, failures = f"NO ANSWER: {err}", failures + 1
        print(f"  {name:<9} {ip:<13} {said}")
    if failures:
        return 1
    return mail_demo()


IMAP_READ = r"""
import imaplib, ssl, sys
host, user, password, subject = sys.argv[1:5]
imap = imaplib.IMAP4_SSL(host, 993, ssl_context=ssl.create_default_context())
imap.login(user, password)
imap.select("INBOX", readonly=True)
typ, data = imap.search(None, "SUBJECT", '"%s"' % subject)
print(len(data[0].split()))
"""


def _lab_password(address: str) -> str:
    """Lab mailbox passwords live in the test fixture file only (pillar has hashes)."""
    return json.loads((config.REPO / "tests" / "lab" / "passwords.json").read_text())[address]


def _salt(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), *args],
                          capture_output=True, text=True, timeout=timeout)


def _salt_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "salt-run"), "-c", str(SALT_DIR), *args],
                          capture_output=True, text=True, timeout=timeout)


def publish_records() -> bool:
    """The lab zones hold no records for the mail domains: mailfleet makes their DKIM keys
    and publishes MX, SPF, DKIM, DMARC ... (RFC 2136 from the master) before mail flows."""
    domains = "domains=" + ",".join(config.MAIL_DOMAINS)
    print(f"\n== salt-run mailfleet_dkim.ensure {domains}")
    ensure = _salt_run("--out=json", "mailfleet_dkim.ensure", domains)
    try:
        ret = json.loads(ensure.stdout)
    except ValueError:
        print(ensure.stdout[-3000:], ensure.stderr[-2000:])
        return False
    for domain in config.MAIL_DOMAINS:
        info = ret.get(domain) or {}
        print(f"  {domain}: signing with selector {info.get('signing') or 'NONE: ' + str(info.get('error'))}")
    print(f"\n== salt-run mailfleet_dns.publish {domains}")
    pub = _salt_run("--out=json", "mailfleet_dns.publish", domains)
    try:
        changes = json.loads(pub.stdout).get("changes") or {}
    except ValueError:
        print(pub.stdout[-3000:], pub.stderr[-2000:])
        return False
    for domain, lines in sorted(changes.items()):
        print(f"  {domain}: " + ("; ".join(lines) if lines else "already as desired"))
    return ensure.returncode == 0 and pub.returncode == 0


def verify_records() -> bool:
    domains = "domains=" + ",".join(config.MAIL_DOMAINS)
    print(f"\n== salt-run mailfleet_dns.verify {domains}")
    ver = _salt_run("mailfleet_dns.verify", domains)
    for line in ver.stdout.splitlines():  # the table and its summary, not the raw return
        print(line)
        if "problem(s)" in line:
            break
    return ver.returncode == 0


def mail_demo() -> int:
    """Converge the mail hosts, send alice a message from outside, read it back, run the ritual."""
    import time
    import uuid
    if not publish_records():
        return 1
    print("\n== salt '*mail*' state.apply")
    t0 = time.monotonic()
    out = _salt("--out=json", "--static", "-t", "900", "*mail*", "state.apply", "queue=True")
    try:
        ret = json.loads(out.stdout)
    except ValueError:
        print(out.stdout[-3000:], out.stderr[-2000:])
        return 1
    for minion, states in sorted(ret.items()):
        if not isinstance(states, dict):
            print(f"  {minion}: {states}")
            return 1
        failed = [s.get("__id__") for s in states.values() if s.get("result") is False]
        changed = sum(1 for s in states.values() if s.get("changes"))
        print(f"  {minion}: {len(states)} states, {changed} changed, "
              f"{'FAILED: ' + ', '.join(failed) if failed else 'all good'}")
        if failed:
            return 1
    print(f"  converged in {time.monotonic() - t0:.0f}s")
    records_ok = verify_records()

    subject = f"demo-{uuid.uuid4().hex[:8]}"
    print(f"\n== outside -> alice@example-a.test on mail01:25, subject {subject}")
    sent = run_in("outside", ["swaks", "--hide-all", "--server", "mail01.lab.test", "--port", "25",
                              "--from", "friend@outside.lab.test", "--to", "alice@example-a.test",
                              "--header", f"Subject: {subject}"])
    print("  accepted" if sent.returncode == 0 else f"  REFUSED: {sent.stdout}{sent.stderr}")
    found = "0"
    for _ in range(30):
        found = run_in("outside", ["python3", "-c", IMAP_READ, "mail01.lab.test",
                                   "alice@example-a.test", _lab_password("alice@example-a.test"), subject]).stdout.strip()
        if found == "1":
            break
        time.sleep(1)
    print(f"  read back over IMAPS (993, certificate verified): {found} message")
    webmail_urls()

    print("\n== salt-run mailcheck.fleet")
    check = subprocess.run([str(VENV_BIN / "salt-run"), "-c", str(SALT_DIR), "mailcheck.fleet"],
                           capture_output=True, text=True, timeout=300)
    table = []
    for line in check.stdout.splitlines():  # the table and its summary, not the raw return
        table.append(line)
        if line.startswith(("PASS:", "FAIL:")):
            break
    print("\n".join(table))
    ritual_ok = check.returncode == 0 and "FAIL" not in check.stdout
    return 0 if found == "1" and sent.returncode == 0 and ritual_ok and records_ok else 1


def webmail_urls() -> None:
    """Where a user reads mail in a browser: Roundcube on each mail host that serves it."""
    import http.client
    import socket
    print("\n== webmail: Roundcube over HTTPS (certificate verified against the lab's Pebble root)")
    ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "ca" / "pebble-root.pem"))
    for name, host in fleet.load_state()["hosts"].items():
        if host["role"] != "mail":
            continue
        fqdn = f"{name}.{config.DOMAIN}"
        try:
            conn = http.client.HTTPSConnection(fqdn, 443, context=ctx, timeout=10)
            conn.sock = ctx.wrap_socket(socket.create_connection((host["ip"], 443), timeout=10),
                                        server_hostname=fqdn)
            conn.request("GET", "/roundcube/")
            resp = conn.getresponse()
            said = "login page" if resp.status == 200 and b"login-form" in resp.read() else f"HTTP {resp.status}"
            conn.close()
        except OSError as err:
            said = f"no answer: {err}"
        print(f"  https://{fqdn}/roundcube/  ({host['ip']}): {said}")
    print("  (a browser here: chromium --host-resolver-rules='MAP mail01.lab.test 198.18.0.11';"
          " inbox screenshot of the browser test: tests/artifacts/roundcube-inbox-mail01.png)")
