"""The base image: debootstrap of Debian 12 + the mail stack + a salt venv, cached by hash.

The cache key is a hash of everything that shapes the image (recipe, package list, the
image's Python pins, suite, mirror). A build happens in `<key>.partial` and is renamed to `<key>`
only when complete, so an interrupted build never looks finished.
"""
import hashlib
import shutil
import sys
import time
from pathlib import Path

from . import config
from .progress import Step, run_logged, say

IMAGE_PYTHON_PACKAGES = ("salt", "pymysql", "dnspython", "cryptography")
RECIPE_FILES = ("lab/image/recipe.sh", "lab/image/packages.txt", "lab/image/image-requirements.lock")


def recipe_key() -> str:
    digest = hashlib.sha256()
    for rel in RECIPE_FILES:
        digest.update(rel.encode() + b"\0" + (config.REPO / rel).read_bytes() + b"\0")
    digest.update(f"{config.SUITE} {config.DEBIAN_MIRROR}".encode())
    return digest.hexdigest()[:16]


def image_path() -> Path:
    return config.CACHE / "images" / recipe_key()


def is_built() -> bool:
    return (image_path() / "etc" / "mailfleet-image").is_file()


def _image_in_use() -> str | None:
    """The image a running lab booted (never removed under its feet)."""
    import json
    try:
        return json.loads((config.STATE / "state.json").read_text()).get("image")
    except (OSError, ValueError):
        return None


def build(force: bool = False) -> Path:
    target = image_path()
    if is_built() and not force:
        say(f"base image {target.name} is cached ({target})")
        return target
    images = target.parent
    images.mkdir(parents=True, exist_ok=True)
    partial = images / f"{target.name}.partial"
    for stale in images.glob("*.partial"):
        say(f"removing an interrupted build: {stale}")
        shutil.rmtree(stale)
    log = images / f"{target.name}.log"
    log.write_text("")
    t0 = time.monotonic()
    try:
        with Step("debootstrap Debian 12 (minbase)", tail=log):
            run_logged(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus",
                        config.SUITE, str(partial), config.DEBIAN_MIRROR], log)
        build_dir = partial / "var" / "tmp" / "mfbuild"  # nspawn mounts a tmpfs on /tmp
        build_dir.mkdir(parents=True)
        for rel in RECIPE_FILES:
            shutil.copy(config.REPO / rel, build_dir / Path(rel).name)
        with Step("building salt's wheels for the image", tail=log):
            run_logged([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
                        "-w", str(build_dir / "wheels"), "-c", str(config.REPO / "lab/image/image-requirements.lock"),
                        *IMAGE_PYTHON_PACKAGES], log)
        with Step("installing the mail stack and salt into the image", tail=log):
            run_logged(["systemd-nspawn", "-q", "-D", str(partial), "--register=no", "--keep-unit",
                        "--resolv-conf=copy-host", "--timezone=off", "--pipe",
                        "/bin/sh", "/var/tmp/mfbuild/recipe.sh"], log)
        shutil.rmtree(build_dir)
        (partial / "etc" / "resolv.conf").unlink(missing_ok=True)
        (partial / "etc" / "mailfleet-image").write_text(f"{target.name}\n")
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:
        say(f"image build did not finish; removing {partial}")
        shutil.rmtree(partial, ignore_errors=True)
        raise
    in_use = _image_in_use()
    for old in images.iterdir():  # one image at a time: old recipes only waste disk
        if old.is_dir() and old.name != target.name and str(old) != in_use:
            shutil.rmtree(old, ignore_errors=True)
    say(f"base image {target.name} built in {time.monotonic() - t0:.0f}s")
    return target
