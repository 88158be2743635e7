"""Last in the run: `make lab-down` leaves nothing behind."""
import subprocess
import sys
from pathlib import Path

from mflab import config, fleet, image, net


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


def test_lab_down_leaves_nothing_behind(lab):
    proc = subprocess.run([sys.executable, str(config.REPO / "lab" / "labctl.py"), "down"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fleet._machine_pids() == {}
    assert running_nspawn() == []
    assert net.leftovers() == []
    assert not config.STATE.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(config.STATE) not in mounts and str(image.image_path()) not in mounts
