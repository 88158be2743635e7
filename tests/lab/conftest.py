"""The lab fleet, booted once per test run and shared by every lab test.

If the lab is already up (a developer ran `make lab`), the tests use it and leave it up;
otherwise they boot it and take it down at the end of the run.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mflab import config, fleet

REPO = config.REPO
VENV_BIN = Path(sys.executable).parent


class Lab:
    """Handles on the running lab for tests: commands in hosts, salt from the repo root."""

    def run(self, host: str, *argv: str, input: str | None = None, timeout: float = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = fleet.run_in(host, list(argv), input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{host}: {' '.join(argv)} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")
        return proc

    def salt(self, *args: str, timeout: float = 300) -> dict:
        """The `salt` CLI as a postmaster runs it: from the repo root, via the Saltfile."""
        if "state.apply" in args and not any(a.startswith("queue=") for a in args):
            args = (*args, "queue=True")  # wait for a run already under way, do not fail
        # --static goes through Salt 3008's batch path, which gives up on returns after
        # `timeout` (+ gather_job_timeout): pass ours, or long state runs come back empty.
        proc = subprocess.run([str(VENV_BIN / "salt"), "--out=json", "--static", "-t", str(int(timeout)), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=timeout + 60)
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"salt {' '.join(args)}: exit {proc.returncode}\n"
                                 f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")

    def ip(self, host: str) -> str:
        return fleet.load_state()["hosts"][host]["ip"]

    @property
    def mail_hosts(self) -> list[str]:
        return [n for n, h in fleet.load_state()["hosts"].items() if h["role"] == "mail"]


@pytest.fixture(scope="session")
def lab():
    started_here = not fleet.is_up()
    if started_here:
        proc = subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), "up"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail(f"lab up failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    yield Lab()
    if started_here and fleet.load_state():
        subprocess.run([sys.executable, str(REPO / "lab" / "labctl.py"), "down"], check=False)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.lab)


def state_failures(ret) -> list[str]:
    """Human-readable failures of a `salt --out=json state.apply` return ([] = all good)."""
    problems = []
    for minion, states in ret.items():
        if not isinstance(states, dict):
            problems.append(f"{minion}: {states}")
            continue
        for sid, st in states.items():
            if st.get("result") is False:
                problems.append(f"{minion}: {st.get('__id__', sid)}: {st.get('comment')}")
    return problems


def state_changes(ret) -> list[str]:
    return [f"{minion}: {st.get('__id__', sid)}: {st.get('changes')}"
            for minion, states in ret.items() if isinstance(states, dict)
            for sid, st in states.items() if st.get("changes")]


def salt_plain(*args: str, timeout: float = 1800) -> tuple[int, dict, str]:
    """`salt --out=json ARGS` exactly as a postmaster types it: no --static, no -t (the
    master's timeout, 20 s, with Salt's own find_job polling while minions work). Returns
    (exit code, {minion: return}, raw output): the CLI prints one JSON document per minion
    as each returns."""
    proc = subprocess.run([str(VENV_BIN / "salt"), "--out=json", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    out, rets, dec, i = proc.stdout, {}, json.JSONDecoder(), 0
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            break
        try:
            doc, i = dec.raw_decode(out, i)
        except ValueError:
            break
        if isinstance(doc, dict):
            rets.update(doc)
    return proc.returncode, rets, out + proc.stderr


@pytest.fixture(scope="session")
def converged(lab):
    """Every mail host converged once with the plain `salt '*mail*' state.apply` (the
    postmaster's command, no --static, no -t), after the mail domains' DKIM keys and DNS
    records are published (`_publish_lab_domains`): the lab seeds no MX/SPF/DKIM/DMARC, so
    mail between hosts needs them before any test sends. Nothing waits for a minion
    restart: none happens (issue 12; tests/lab/test_01_first_apply.py)."""
    import time
    _publish_lab_domains()
    pids = {h: minion_pid(lab, h) for h in lab.mail_hosts}
    t0 = time.monotonic()
    code, ret, out = salt_plain("*mail*", "state.apply")
    seconds = time.monotonic() - t0
    returned = time.monotonic()
    assert set(ret) == {f"{h}.lab.test" for h in lab.mail_hosts}, out[-4000:]
    failures = state_failures(ret)
    assert not failures, "\n".join(failures)
    assert code == 0, out[-4000:]
    return {"first_apply": ret, "first_apply_seconds": seconds, "returned": returned, "minion_pids": pids}


def minion_pid(lab, host: str) -> int:
    """The salt-minion service's main process on a host (a restart changes it)."""
    return int(lab.run(host, "systemctl", "show", "-p", "MainPID", "--value", "salt-minion").stdout.strip())


LAB_MAIL_DOMAINS = ",".join(config.MAIL_DOMAINS)


def _publish_lab_domains() -> None:
    """What a postmaster runs before the first highstate of a new domain: DKIM keys made and
    their records published and seen in DNS (`mailfleet_dkim.ensure`), then every record of
    the domains (`mailfleet_dns.publish`). The highstate then installs the signing keys."""
    code, ret, out = salt_run("mailfleet_dkim.ensure", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0 and ret and all(ret[d].get("signing") for d in config.MAIL_DOMAINS), out[-3000:]
    code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0 and ret and not ret["errors"], out[-3000:]


def salt_run(*args: str, timeout: float = 300) -> tuple[int, dict | None, str]:
    """`salt-run --out=json ARGS` from the repo root: (exit code, parsed return, raw output)."""
    proc = subprocess.run([str(VENV_BIN / "salt-run"), "--out=json", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = None
    return proc.returncode, data, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def published(converged):
    """The mail domains' DNS records published by mailfleet (`salt-run mailfleet_dns.publish`)
    right after convergence; a second run must change nothing."""
    # Only the lab's own mail domains: tests and benchmarks onboard others whose zones the
    # lab DNS does not hold.
    code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0 and ret and not ret["errors"], out[-3000:]
    code, again, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0 and again["changes"] == {d: [] for d in again["changes"]}, out[-3000:]
    return ret
