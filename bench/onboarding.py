#!/usr/bin/env python3
"""Benchmark: onboarding latency in the lab.

From the moment a new domain file appears (in the lab master's extra domain folder) to the
first message for the new domain accepted by its host: `salt '*mail*' state.apply` plus
the first SMTP transaction from `outside`. Five trials, each with a fresh domain, removed
afterwards (its rows end deactivated). Anchor in the same run: a no-op `state.apply`, the
floor any pillar-driven change pays.

Run: `.venv/bin/python bench/onboarding.py` (brings the lab up). Output: bench/onboarding.out.
"""
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lab"))
from mflab import fleet
from mflab.fleet import EXTRA_DOMAINS, SALT_DIR, VENV_BIN, run_in

HASH = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$R2rWrzQsUalWSAA41QpprQ$fHQ5LDz0S3v2WR6cQpn78y9h1ge0PiEOx+r9i29cpsk"
TRIALS = 5


def apply(target: str = "*mail*") -> float:
    t0 = time.monotonic()
    out = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                          "-t", "900", target, "state.apply"], capture_output=True, text=True, timeout=900)
    ret = json.loads(out.stdout)
    bad = [s for states in ret.values() for s in states.values() if s.get("result") is False]
    if bad:
        raise SystemExit(f"state.apply failed: {bad[0].get('comment')}")
    return time.monotonic() - t0


def main() -> int:
    fleet.up()
    apply()
    noop = [apply() for _ in range(3)]
    rows = []
    for _ in range(TRIALS):
        domain = f"onboard-{uuid.uuid4().hex[:6]}.test"
        path = EXTRA_DOMAINS / f"{domain}.yaml"
        t0 = time.monotonic()
        path.write_text(json.dumps({"mailfleet": {"domains": {domain: {
            "hosts": ["mail02.lab.test"], "mailboxes": {"first": {"password": HASH}}}}}}))
        applied = apply()
        while True:
            sent = run_in("outside", ["swaks", "--hide-all", "--server", "mail02.lab.test",
                                      "--from", "bench@outside.lab.test", "--to", f"first@{domain}"])
            if sent.returncode == 0:
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit(f"{domain}: no message accepted within 120 s")
            time.sleep(0.5)
        rows.append((time.monotonic() - t0, applied))
        path.unlink()
    apply("mail02.lab.test")
    total = [r[0] for r in rows]
    text = "\n".join([
        f"# bench/onboarding.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        "# new domain file -> first message accepted by its host (mail02), lab of 2 mail hosts",
        f"no-op state.apply (anchor) : median {statistics.median(noop):5.1f} s  ({', '.join(f'{x:.1f}' for x in noop)})",
        f"onboarding, {TRIALS} trials       : median {statistics.median(total):5.1f} s  max {max(total):5.1f} s  (target <= 60 s)",
        f"  of which state.apply     : median {statistics.median(r[1] for r in rows):5.1f} s",
    ]) + "\n"
    print(text)
    (REPO / "bench" / "onboarding.out").write_text(text)
    return 0 if max(total) <= 60 else 1


if __name__ == "__main__":
    sys.exit(main())
