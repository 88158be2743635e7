"""The detector program (_utils/mailfleet_watch.py) as the minion's script engine runs it:
settings reloaded in place, its own code change ends it, nothing but JSON on stdout.
Real files and a real subprocess; no Salt involved (the engine side is Salt's own code)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

import mailfleet_watch as watch

REPO = Path(__file__).resolve().parents[2]
RELAY = ("2026-11-25T19:56:01.000000+00:00 mail01 postfix/smtpd[4000]: NOQUEUE: reject: RCPT from "
         "unknown[{ip}]: 454 4.7.1 <x@elsewhere.test>: Relay access denied; from=<y@a.test> "
         "to=<x@elsewhere.test> proto=ESMTP helo=<a>\n")


def _extmods(tmp_path):
    """A minion's extension_modules layout holding copies of our code."""
    root = tmp_path / "extmods"
    for sub, name in watch.CODE_MODULES:
        (root / sub).mkdir(parents=True, exist_ok=True)
        src = REPO / ("_utils" if sub == "utils" else "_modules") / f"{name}.py"
        shutil.copy(src, root / sub / f"{name}.py")
    return root


def _dirs(tmp_path):
    """An empty mail log and the detector's directory."""
    log = tmp_path / "mail.log"
    log.write_text("")
    wdir = tmp_path / "watch"
    wdir.mkdir()
    return log, wdir


def _settings(log, relay_count, host="mail01.lab.test"):
    return {"host": host, "log": str(log), "interval": 0.2, "poll": 0.05, "max_ips": 500,
            "thresholds": {"relay": {"count": relay_count, "window": 600}},
            "queue": None, "dnsbl": None, "certs": None}


def _wait(pred, seconds=10.0):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_the_minion_config_shipped_names_the_same_engine_stanza():
    conf = yaml.safe_load((REPO / "config" / "minion.d" / "mailfleet.conf").read_text())
    assert conf["engines"] == [watch.ENGINE_STANZA]
    assert conf["engines"][0]["mailfleet_watch"]["engine_module"] == "script"  # a core engine: no sync needed


def test_a_lowered_threshold_bans_at_the_next_attempt_counting_the_earlier_ones_without_a_restart(tmp_path):
    log, wdir = _dirs(tmp_path)
    watch.write_json(str(wdir / watch.SETTINGS), _settings(log, 10))
    fired = []
    det = watch.Detector(str(wdir), str(_extmods(tmp_path)), lambda data, tag: fired.append((tag, data)))
    th = threading.Thread(target=det.run, kwargs={"max_seconds": 20}, daemon=True)
    th.start()
    # status.json is written just after the settings take effect: wait for the file itself
    assert _wait(lambda: (wdir / watch.STATUS).exists()), "the detector did not load its settings"
    first_status = json.loads((wdir / watch.STATUS).read_text())
    with open(log, "a") as fh:
        fh.write(RELAY.format(ip="198.19.7.7") * 4)
    time.sleep(1.0)
    assert fired == [], "4 relay attempts under a threshold of 10 were reported"
    watch.write_json(str(wdir / watch.SETTINGS), _settings(log, 3))
    assert _wait(lambda: json.loads((wdir / watch.STATUS).read_text())["settings"] != first_status["settings"])
    with open(log, "a") as fh:  # one more: 5 in the window, over 3 (a fresh count would be 1)
        fh.write(RELAY.format(ip="198.19.7.7"))
    assert _wait(lambda: fired), "the lowered threshold was not applied"
    tag, data = fired[0]
    assert tag == watch.TAG and [(o["ip"], o["rules"]) for o in data["offenders"]] == [("198.19.7.7", {"relay": 5})]
    status = json.loads((wdir / watch.STATUS).read_text())
    assert status["pid"] == first_status["pid"] == os.getpid()      # same process: no restart
    assert status["settings"] != first_status["settings"]
    # (the thread, a daemon, ends by itself within max_seconds: a loaded CI machine needs the slack)


def test_broken_settings_keep_the_ones_in_force(tmp_path):
    log, wdir = _dirs(tmp_path)
    watch.write_json(str(wdir / watch.SETTINGS), _settings(log, 3))
    det = watch.Detector(str(wdir), None, lambda data, tag: None)
    assert det.reload() and det.watcher.agg.rules["relay"]["count"] == 3
    (wdir / watch.SETTINGS).write_text('{"host": "mail01.lab.test", "thresholds": {"relay": {"count": -1}}}')
    assert not det.reload()
    (wdir / watch.SETTINGS).write_text("{not json")
    assert not det.reload()
    assert det.watcher.agg.rules["relay"]["count"] == 3


def test_the_detector_ends_when_its_code_changes_so_the_engine_runs_the_new_code(tmp_path):
    log, wdir = _dirs(tmp_path)
    ext = _extmods(tmp_path)
    watch.write_json(str(wdir / watch.SETTINGS), _settings(log, 3))
    det = watch.Detector(str(wdir), str(ext), lambda data, tag: None)
    th = threading.Thread(target=det.run, kwargs={"max_seconds": 30}, daemon=True)
    th.start()
    assert _wait(lambda: det.conf is not None)
    time.sleep(1.2)
    assert th.is_alive()
    with open(ext / "utils" / "mailfleet_logparse.py", "a") as fh:
        fh.write("\n# a new version\n")
    th.join(5)
    assert not th.is_alive(), "the detector kept running old code"


def test_the_launcher_prints_only_event_lines_and_logs_elsewhere(tmp_path):
    """The launcher as mail.defense renders it, run as the script engine runs it."""
    import jinja2
    log, wdir = _dirs(tmp_path)
    ext = _extmods(tmp_path)
    watch.write_json(str(wdir / watch.SETTINGS), _settings(log, 3))
    env = jinja2.Environment()
    env.filters["tojson"] = json.dumps
    text = env.from_string((REPO / "salt" / "mail" / "files" / "mailfleet-watch-run.jinja").read_text()).render(
        python=sys.executable, extmods=str(ext), watch_dir=str(wdir))
    run = wdir / "run"
    run.write_text(text)
    run.chmod(0o700)
    proc = subprocess.Popen([str(run)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PATH": os.environ["PATH"], "MAILFLEET_WATCH_LOG": str(tmp_path / "w.log")})
    try:
        assert _wait(lambda: (wdir / watch.STATUS).exists()), (tmp_path / "w.log").read_text()
        with open(log, "a") as fh:
            fh.write(RELAY.format(ip="2001:db8::77") * 3)
        line = proc.stdout.readline()
        event = json.loads(line)  # the engine's deserializer: every line must be JSON
        assert event["tag"] == watch.TAG and event["data"]["host"] == "mail01.lab.test"
        assert [o["ip"] for o in event["data"]["offenders"]] == ["2001:db8::77"]
        assert "following" in (tmp_path / "w.log").read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_settings_state_writes_once_and_then_changes_nothing(tmp_path):
    """mailfleet_detector.configured: a second apply with the same settings is a no-op (the
    detector's wait is exercised in the lab; here the minion has no engine stanza, so the state
    also writes it once and says a restart is needed)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("mf_detector_state", REPO / "_states" / "mailfleet_detector.py")
    state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(state)
    state.__opts__ = {"test": False, "engines": [], "conf_file": str(tmp_path / "minion"),
                      "extension_modules": str(tmp_path / "extmods")}
    settings = _settings(tmp_path / "mail.log", 3)
    first = state.configured(str(tmp_path / "watch"), settings)
    assert first["changes"].get("settings") and "restart the minion once" in first["comment"]
    assert (tmp_path / "watch" / watch.SETTINGS).stat().st_mode & 0o777 == 0o600
    second = state.configured(str(tmp_path / "watch"), settings)
    assert second["changes"] == {}, second
    state.__opts__["test"] = True
    changed = dict(settings, thresholds={"relay": {"count": 5, "window": 600}})
    dry = state.configured(str(tmp_path / "watch"), changed)
    assert dry["changes"] == {"settings": {"keys": ["thresholds"]}} and dry["result"] is None


SUBMIT = ("2026-11-25T19:56:0{n}.000000+00:00 mail01 postfix/submission/smtpd[4100]: 4B{n:03d}: "
          "client=unknown[198.18.0.100], sasl_method=PLAIN, sasl_username=alice@example-a.test\n")


def test_a_released_user_starts_from_zero_so_her_next_message_does_not_hold_her_again(tmp_path):
    """Issue 12 follow-up: the detector now outlives a highstate, so after the postmaster's
    release its window still held alice's earlier mail and her first new message held her
    again. mailfleet_sasl_hold.sync writes the release request; the detector confirms it."""
    import mailfleet_sasl_hold as sasl_hold
    log, wdir = _dirs(tmp_path)
    conf = _settings(log, 100)
    conf["thresholds"]["outbound"] = {"messages": 3, "recipients": 1000, "window": 900}
    watch.write_json(str(wdir / watch.SETTINGS), conf)
    fired = []
    det = watch.Detector(str(wdir), str(_extmods(tmp_path)), lambda data, tag: fired.append(data))
    th = threading.Thread(target=det.run, kwargs={"max_seconds": 15}, daemon=True)
    th.start()
    assert _wait(lambda: det.conf is not None)

    def outbound_reports():
        return [o for rep in fired for o in rep.get("outbound", [])]
    with open(log, "a") as fh:
        fh.write("".join(SUBMIT.format(n=i) for i in range(3)))
    assert _wait(lambda: outbound_reports()), "3 messages at a limit of 3 were not reported"
    with open(log, "a") as fh:  # held: two more (5 in the window, 2 since the report)
        fh.write("".join(SUBMIT.format(n=i) for i in range(3, 5)))
    time.sleep(1.0)
    assert len(outbound_reports()) == 1
    assert sasl_hold._forget(["alice@example-a.test"], watch_dir=str(wdir)) == "confirmed"
    with open(log, "a") as fh:  # released: her next message is the first of a new count
        fh.write(SUBMIT.format(n=5))
    time.sleep(1.5)
    assert len(outbound_reports()) == 1, outbound_reports()
    with open(log, "a") as fh:  # ... and the limit still holds for what she sends after it
        fh.write("".join(SUBMIT.format(n=i) for i in range(6, 8)))
    assert _wait(lambda: len(outbound_reports()) == 2), "3 messages after the release were not reported"
    assert outbound_reports()[-1]["messages"] == 3


def test_without_a_detector_the_release_says_so(tmp_path):
    import mailfleet_sasl_hold as sasl_hold
    assert sasl_hold._forget(["a@b.test"], watch_dir=str(tmp_path / "absent")) == "no detector"
    (tmp_path / "w").mkdir()
    assert sasl_hold._forget(["a@b.test"], watch_dir=str(tmp_path / "w"), wait=0.5) == "not confirmed"
