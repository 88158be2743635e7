#!/usr/bin/env python3
"""Benchmark: load held by a converged lab mail host.

2,000 messages from `outside` over 20 concurrent SMTP sessions (Postfix's smtp-source) to
alice@example-a.test on mail01: every message must end in her maildir and nothing may be
left deferred. The ceiling, measured in the same run with the same client: Postfix's
smtp-sink on mail01 (accepts and discards), so the figure says what the mail path costs.

Run: `.venv/bin/python bench/smtp_load.py` (brings the lab up and converges mail01).
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
from mflab import fleet
from mflab.fleet import SALT_DIR, VENV_BIN, run_in

MESSAGES, SESSIONS, SIZE = 2000, 20, 2048
MAILDIR = "/var/vmail/example-a.test/alice"
SINK_PORT = 2525


def count_maildir() -> int:
    out = run_in("mail01", ["sh", "-c", f"ls {MAILDIR}/new {MAILDIR}/cur 2>/dev/null | grep -c '^[0-9]'"])
    return int(out.stdout.strip() or 0)


def smtp_source(target: str, subject: str) -> float:
    t0 = time.monotonic()
    proc = run_in("outside", ["smtp-source", "-s", str(SESSIONS), "-m", str(MESSAGES),
                              "-l", str(SIZE), "-M", "outside.lab.test", "-f", "bench@outside.lab.test",
                              "-t", "alice@example-a.test", "-S", subject, target], timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"smtp-source to {target} failed: {proc.stderr or proc.stdout}")
    return time.monotonic() - t0


def main() -> int:
    fleet.up()
    apply = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                            "-t", "900", "mail01.lab.test", "state.apply"], capture_output=True, text=True, timeout=900)
    states = json.loads(apply.stdout)["mail01.lab.test"]
    assert all(s["result"] for s in states.values()), "mail01 did not converge"
    ip = fleet.load_state()["hosts"]["mail01"]["ip"]
    lines = [f"# bench/smtp_load.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
             f"# {MESSAGES} messages of {SIZE} bytes, {SESSIONS} concurrent sessions, outside -> mail01",
             "# machine: 2 cores, the whole lab (7 hosts) running on it"]

    # Ceiling: the same client against smtp-sink on mail01 (port opened for the run only).
    handle = None
    sink = run_in("mail01", ["sh", "-c", f"smtp-sink -u postfix 0.0.0.0:{SINK_PORT} 256 "
                                         f">/dev/null 2>&1 & echo $!"]).stdout.strip()
    try:
        added = run_in("mail01", ["nft", "--echo", "--handle", "insert", "rule", "inet", "mailfleet", "input",
                                  "tcp", "dport", str(SINK_PORT), "accept", "comment", '"bench sink"'])
        handle = added.stdout.split("# handle")[-1].strip()
        time.sleep(1)
        sink_s = smtp_source(f"{ip}:{SINK_PORT}", "sink")
    finally:
        run_in("mail01", ["kill", sink])
        if handle:
            run_in("mail01", ["nft", "delete", "rule", "inet", "mailfleet", "input", "handle", handle])

    before = count_maildir()
    deferred_before = run_in("mail01", ["grep", "-c", "status=deferred", "/var/log/mail.log"]).stdout.strip()
    subject = f"bench-{uuid.uuid4().hex[:8]}"
    t0 = time.monotonic()
    accept_s = smtp_source(f"{ip}:25", subject)
    deadline = time.monotonic() + 600
    while (delivered := count_maildir() - before) < MESSAGES and time.monotonic() < deadline:
        time.sleep(0.5)
    deliver_s = time.monotonic() - t0
    queue = [l for l in run_in("mail01", ["postqueue", "-j"]).stdout.splitlines() if l.strip()]
    deferred_after = run_in("mail01", ["grep", "-c", "status=deferred", "/var/log/mail.log"]).stdout.strip()

    lines += [
        f"smtp-sink ceiling       : {MESSAGES / sink_s:8.1f} msg/s  ({sink_s:.1f} s for {MESSAGES})",
        f"mail01 accepted (SMTP)  : {MESSAGES / accept_s:8.1f} msg/s  ({accept_s:.1f} s)",
        f"mail01 delivered (LMTP) : {MESSAGES / deliver_s:8.1f} msg/s  ({deliver_s:.1f} s until the last "
        f"was in the maildir)",
        f"in alice's maildir      : {delivered} of {MESSAGES}",
        f"left in mail01's queue  : {len(queue)}",
        f"new 'status=deferred'   : {int(deferred_after or 0) - int(deferred_before or 0)}",
        f"delivered / ceiling     : {(MESSAGES / deliver_s) / (MESSAGES / sink_s):.2f}",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "smtp_load.out").write_text(text)
    return 0 if delivered == MESSAGES and not queue else 1


if __name__ == "__main__":
    sys.exit(main())
