"""The seed's ritual (section 10 and the port check of section 11), automated: every mail
host runs `mailcheck.ritual` against itself with real clients, the master prints one table
for the fleet. A broken check must come out as FAIL with the server's reason."""
import json
import subprocess
import sys

import pytest

from mflab import config

SALT_RUN = str(config.REPO / ".venv" / "bin" / "salt-run")
EXPECTED_CHECKS = ["smtp-25", "submission-587", "imaps-993", "relay-refused",
                   "closed-143", "closed-110", "fcrdns"]


def salt_run(*args, timeout=300):
    return subprocess.run([SALT_RUN, *args], cwd=config.REPO, capture_output=True, text=True,
                          timeout=timeout)


def salt_run_json(*args, timeout=300):
    proc = salt_run("--out=json", *args, timeout=timeout)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"salt-run {' '.join(args)}: exit {proc.returncode}\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


RUNNER_JOB = """
import json, sys
import salt.config, salt.runner
opts = salt.config.master_config(sys.argv[1])
opts["quiet"] = True
with salt.runner.RunnerClient(opts) as runner:
    data = runner.cmd("mailcheck.fleet", kwarg=json.loads(sys.argv[2]), full_return=True,
                      print_event=False)
print(json.dumps({"success": data.get("success"), "return": data.get("return")}))
"""


def runner_job(kwarg):
    """`mailcheck.fleet` as a job through RunnerClient: its `success` and `return`."""
    proc = subprocess.run([sys.executable, "-c", RUNNER_JOB, str(config.STATE / "salt" / "master"),
                           json.dumps(kwarg)], cwd=config.REPO, capture_output=True, text=True,
                          timeout=300)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"runner job: exit {proc.returncode}\n{proc.stdout[-2000:]}\n"
                             f"{proc.stderr[-2000:]}")


@pytest.fixture(scope="module")
def fleet(lab, converged):
    """The fleet converged (conftest's `converged`: `salt '*mail*' state.apply`) and the
    mailcheck modules synced to the minions and the master."""
    synced = lab.salt("*mail*", "saltutil.sync_modules")
    assert set(synced) == {f"{h}.{config.DOMAIN}" for h in lab.mail_hosts}, synced
    proc = salt_run("saltutil.sync_runners")
    assert proc.returncode == 0, proc.stderr
    return lab


def test_ritual_passes_on_every_mail_host(fleet):
    returns = salt_run_json("mailcheck.fleet")
    assert set(returns) == {f"{h}.{config.DOMAIN}" for h in fleet.mail_hosts}
    for minion, results in returns.items():
        assert [r["check"] for r in results] == EXPECTED_CHECKS, (minion, results)
        failed = [r for r in results if r["ok"] is not True]
        assert not failed, f"{minion}: " + json.dumps(failed, indent=1)
    # The details are the servers' own words, as the seed's telnet/openssl session shows them.
    for minion, results in returns.items():
        by = {r["check"]: r["detail"] for r in results}
        assert f"banner 220 {minion} ESMTP" in by["smtp-25"]
        assert "STARTTLS" in by["smtp-25"]
        assert "530 5.7.0 Must issue a STARTTLS command first" in by["submission-587"]
        assert f"certificate names {minion}" in by["submission-587"]
        assert "235 2.7.0 Authentication successful" in by["submission-587"]
        assert "wrong password refused: 535" in by["submission-587"]
        assert "LOGIN as" in by["imaps-993"] and "SELECT INBOX: OK" in by["imaps-993"]
        assert "Relay access denied" in by["relay-refused"]
        assert by["fcrdns"].startswith(f"A {minion} = ")


def test_table_shows_the_fleet_and_a_closed_port_check_fails_with_its_reason(fleet):
    # IMAPS "pointed at" 143, where nothing may listen: the check must fail, say why, and
    # the fleet table must show it.
    host = f"{fleet.mail_hosts[0]}.{config.DOMAIN}"
    ip = fleet.ip(fleet.mail_hosts[0])
    proc = salt_run("mailcheck.fleet", f"tgt={host}", "checks=imaps", 'ports={"imaps": 143}')
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["HOST", "CHECK", "RESULT", "DETAIL"], proc.stdout
    assert lines[1].split(None, 3) == [host, "imaps-143", "FAIL",
                                       f"connect {ip}:143: connection refused"], proc.stdout
    assert lines[2] == f"FAIL: 1 of 1 checks failed on 1 of 1 hosts ({host})", proc.stdout


def test_wrong_probe_password_is_reported_as_failure_with_the_server_reply(fleet):
    host = f"{fleet.mail_hosts[-1]}.{config.DOMAIN}"
    wrong = "not-the-probe-password"
    # Dovecot delays logins from an address after failures (2, 4, 8, 15 s): room for that.
    returns = salt_run_json("mailcheck.fleet", f"tgt={host}", f"password={wrong}",
                            "checks=submission,imaps", "timeout=20")
    by = {r["check"]: r for r in returns[host]}
    assert by["submission-587"]["ok"] is False
    assert "refused: 535 5.7.8 Error: authentication failed" in by["submission-587"]["detail"]
    assert "wrong-password test not tried" in by["submission-587"]["detail"]
    assert by["imaps-993"]["ok"] is False
    assert "[AUTHENTICATIONFAILED]" in by["imaps-993"]["detail"]

    # The runner job itself is marked failed (what a reactor, orchestrate or salt-api
    # caller sees as `success`), through Salt's Python API in a process of its own.
    bad = runner_job({"tgt": host, "checks": "fcrdns", "host": "nonexistent.lab.test"})
    good = runner_job({"tgt": host, "checks": "fcrdns"})
    assert bad["success"] is False, bad
    assert bad["return"][host] == [{"check": "fcrdns", "ok": False,
                                    "detail": "not tested: no address for nonexistent.lab.test "
                                              "(A: NXDOMAIN)"}]
    assert good["success"] is True, good
