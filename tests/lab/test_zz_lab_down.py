"""Last in the run: `make lab-down` leaves nothing behind, even from a half-up lab."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mflab import config, fleet, image, net

LABCTL = [sys.executable, str(config.REPO / "lab" / "labctl.py")]


def running_nspawn() -> list[str]:
    """systemd-nspawn processes still running (a reaped-later zombie is not running)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        if comm == "systemd-nspawn" and rest.split()[0] != "Z":
            found.append(stat.parent.name)
    return found


def lab_down_and_nothing_left():
    proc = subprocess.run(LABCTL + ["down"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fleet._machine_pids() == {}
    assert running_nspawn() == []
    ports = subprocess.run(["ss", "-Hltn", "src", config.MASTER_IP], capture_output=True,
                           text=True).stdout
    assert ports.strip() == "", f"something still listens on the master address:\n{ports}"
    assert net.leftovers() == []
    assert not config.STATE.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(config.STATE) not in mounts
    assert not [s for s in config.RELEASES if str(image.image_path(s)) in mounts]


def test_a_half_up_lab_is_brought_down_cleanly(lab):
    # A host crashed (its nspawn killed) and the master died: status says so, down cleans up.
    state = fleet.load_state()
    os.kill(state["hosts"]["attacker"]["nspawn_pid"], signal.SIGKILL)
    os.kill(state["master_pid"], signal.SIGKILL)
    status = subprocess.run(LABCTL + ["status", "--json"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1
    hosts = json.loads(status.stdout)["hosts"]
    assert hosts["master"]["running"] is False and hosts["mail01"]["running"] is True
    lab_down_and_nothing_left()


def test_lab_down_twice_is_harmless(lab):
    lab_down_and_nothing_left()
