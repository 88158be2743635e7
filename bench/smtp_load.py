#!/usr/bin/env python3
"""Benchmark: load held by each converged lab mail host, one per Debian release.

For each mail host of the lab (by default mail01 on Debian 12 and mail02 on Debian 13, the
mixed lab), in one run: 2,000 messages from `outside` over 20 concurrent SMTP sessions
(Postfix's smtp-source) to the host's first mailbox; every message must end in that maildir
and nothing may be left deferred. The ceiling, measured in the same run with the same client
on each host: Postfix's smtp-sink (accepts and discards), so the figure says what the mail
path costs on that release.

Run: `.venv/bin/python bench/smtp_load.py` (brings the lab up and converges the hosts).
Output: printed and written to bench/smtp_load.out.
"""
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from mflab import config, fleet
from mflab.fleet import SALT_DIR, VENV_BIN, run_in

MESSAGES, SESSIONS, SIZE = 2000, 20, 2048
SINK_PORT = 2525
# host -> (recipient, its maildir): the lab's mail domains and their first mailbox
TARGETS = {"mail01": ("alice@example-a.test", "/var/vmail/example-a.test/alice"),
           "mail02": ("bob@example-b.test", "/var/vmail/example-b.test/bob")}


def count_maildir(host: str, maildir: str) -> int:
    out = run_in(host, ["sh", "-c", f"ls {maildir}/new {maildir}/cur 2>/dev/null | grep -c '^[0-9]'"])
    return int(out.stdout.strip() or 0)


def smtp_source(target: str, rcpt: str, subject: str) -> float:
    t0 = time.monotonic()
    proc = run_in("outside", ["smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES),
                              "-l", str(SIZE), "-M", "outside.lab.test", "-f", "bench@outside.lab.test",
                              "-t", rcpt, "-S", subject, target], timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"smtp-source to {target} failed: {proc.stderr or proc.stdout}")
    return time.monotonic() - t0


def converge(hosts: list[str]) -> None:
    fqdns = ",".join(f"{h}.{config.DOMAIN}" for h in hosts)
    apply = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                            "-t", "900", "-L", fqdns, "state.apply"], capture_output=True, text=True, timeout=900)
    rets = json.loads(apply.stdout)
    for h in hosts:
        states = rets[f"{h}.{config.DOMAIN}"]
        assert isinstance(states, dict) and all(s["result"] for s in states.values()), f"{h} did not converge"


def one_host(host: str, ip: str) -> tuple[list[str], bool]:
    rcpt, maildir = TARGETS[host]
    # Ceiling: the same client against smtp-sink on the host (port opened for the run only).
    handle = None
    sink = run_in(host, ["sh", "-c", f"smtp-sink -u postfix 0.0.0.0:{SINK_PORT} 256 "
                                     f">/dev/null 2>&1 & echo $!"]).stdout.strip()
    try:
        added = run_in(host, ["nft", "--echo", "--handle", "insert", "rule", "inet", "mailfleet", "input",
                              "tcp", "dport", str(SINK_PORT), "accept", "comment", '"bench sink"'])
        handle = added.stdout.split("# handle")[-1].strip()
        time.sleep(1)
        sink_s = smtp_source(f"{ip}:{SINK_PORT}", rcpt, "sink")
    finally:
        run_in(host, ["kill", sink])
        if handle:
            run_in(host, ["nft", "delete", "rule", "inet", "mailfleet", "input", "handle", handle])

    before = count_maildir(host, maildir)
    deferred_before = run_in(host, ["grep", "-c", "status=deferred", "/var/log/mail.log"]).stdout.strip()
    subject = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    accept_s = smtp_source(f"{ip}:25", rcpt, subject)
    deadline = time.monotonic() + 600
    while (delivered := count_maildir(host, maildir) - before) < MESSAGES and time.monotonic() < deadline:
        time.sleep(0.5)
    deliver_s = time.monotonic() - t0
    queue = [line for line in run_in(host, ["postqueue", "-j"]).stdout.splitlines() if line.strip()]
    deferred_after = run_in(host, ["grep", "-c", "status=deferred", "/var/log/mail.log"]).stdout.strip()
    versions = run_in(host, ["sh", "-c", "postconf -h mail_version; dovecot --version"]).stdout.split()
    user = rcpt.split("@")[0]
    lines = [
        f"## {host}: Debian {config.RELEASES[fleet.load_state()['hosts'][host].get('release', 'bookworm')]}, "
        f"Postfix {versions[0] if versions else '?'}, Dovecot {versions[1] if len(versions) > 1 else '?'}",
        f"smtp-sink ceiling       : {MESSAGES / sink_s:8.1f} msg/s  ({sink_s:.1f} s for {MESSAGES})",
        f"{host} accepted (SMTP)  : {MESSAGES / accept_s:8.1f} msg/s  ({accept_s:.1f} s)",
        f"{host} delivered (LMTP) : {MESSAGES / deliver_s:8.1f} msg/s  ({deliver_s:.1f} s until the last "
        f"was in the maildir)",
        f"in {user}'s maildir{' ' * max(0, 6 - len(user))}     : {delivered} of {MESSAGES}",
        f"left in {host}'s queue  : {len(queue)}",
        f"new 'status=deferred'   : {int(deferred_after or 0) - int(deferred_before or 0)}",
        f"delivered / ceiling     : {(MESSAGES / deliver_s) / (MESSAGES / sink_s):.2f}",
    ]
    return lines, delivered == MESSAGES and not queue


def main() -> int:
    fleet.up()
    state = fleet.load_state()
    hosts = [h for h in TARGETS if h in state["hosts"]]
    converge(hosts)
    lines = [f"# bench/smtp_load.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"# {MESSAGES} messages of {SIZE} bytes, {SESSIONS} concurrent sessions, outside -> each mail host",
             "# machine: 2 cores, the whole lab (7 hosts) running on it; hosts measured one after the other"]
    ok = True
    for host in hosts:
        host_lines, host_ok = one_host(host, state["hosts"][host]["ip"])
        lines += host_lines
        ok = ok and host_ok
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "smtp_load.out").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
