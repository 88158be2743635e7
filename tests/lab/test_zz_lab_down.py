"""Last in the run: `make lab-down` leaves nothing behind."""
import subprocess
import sys
from pathlib import Path

from mflab import config, fleet, image, net


def test_lab_down_leaves_nothing_behind(lab):
    proc = subprocess.run([sys.executable, str(config.REPO / "lab" / "labctl.py"), "down"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert fleet._machine_pids() == {}
    nspawn = [p for p in Path("/proc").glob("[0-9]*/comm")
              if p.read_text(errors="replace").strip() == "systemd-nspawn"]
    assert nspawn == []
    assert net.leftovers() == []
    assert not config.STATE.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(config.STATE) not in mounts and str(image.image_path()) not in mounts
