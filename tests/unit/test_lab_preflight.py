"""The lab refuses to start without what it needs: one line naming it, non-zero, nothing built.

These run `labctl build-image` (it never touches a running lab) with a private cache folder.
"""
import os
import subprocess
import sys

from mflab import config

LABCTL = [sys.executable, str(config.REPO / "lab" / "labctl.py"), "build-image"]


def run(env_extra, tmp_path, prefix=()):
    env = dict(os.environ, MAILFLEET_LAB_CACHE=str(tmp_path / "cache"), **env_extra)
    return subprocess.run([*prefix, *LABCTL], capture_output=True, text=True, env=env, timeout=60)


def test_not_root(tmp_path):
    # A new user namespace without a uid map: the same files, but euid 65534, not root.
    proc = run({}, tmp_path, prefix=("unshare", "--user"))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == (
        "lab: must run as root (systemd-nspawn, bridges and nftables need it)")
    assert not (tmp_path / "cache").exists()


def test_missing_tools_are_named(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = run({"PATH": str(empty)}, tmp_path)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("lab: missing systemd-nspawn, ip, nft, nsenter, debootstrap")
    assert not (tmp_path / "cache").exists()


def test_unreachable_debian_mirror(tmp_path):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    proc = run({"MAILFLEET_DEBIAN_MIRROR": "http://127.0.0.1:9/debian"}, tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "lab: Debian mirror unreachable (http://127.0.0.1:9/debian/dists/bookworm/Release")
    assert not (tmp_path / "cache").exists()
