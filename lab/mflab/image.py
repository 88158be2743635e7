"""Base images: debootstrap of one Debian release + the mail stack + a salt venv, cached by hash.

One recipe serves every release (`RELEASES`); each release's image is keyed by a hash of
everything that shapes it (recipe, package list, the image's Python pins, suite, mirror) and
kept side by side with the other releases' images: building one never evicts another.
A build happens in `<suite>-<key>.partial` and is renamed to `<suite>-<key>` only when
complete, so an interrupted build never looks finished.
"""
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

from . import config
from .progress import Step, run_logged, say

RECIPE_FILES = ("lab/image/recipe.sh", "lab/image/packages.txt", "lab/image/image-requirements.lock")
# The build machine's CA bundle, for the image's pip only while it builds (this machine may
# reach the package index through an intercepting proxy); never left in the image.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def recipe_key(suite: str) -> str:
    config.check_release(suite)
    digest = hashlib.sha256()
    for rel in RECIPE_FILES:
        digest.update(rel.encode() + b"\0" + (config.REPO / rel).read_bytes() + b"\0")
    digest.update(f"{suite} {config.DEBIAN_MIRROR}".encode())
    return digest.hexdigest()[:16]


def image_path(suite: str = config.DEFAULT_RELEASE) -> Path:
    return config.CACHE / "images" / f"{suite}-{recipe_key(suite)}"


def is_built(suite: str = config.DEFAULT_RELEASE) -> bool:
    return (image_path(suite) / "etc" / "mailfleet-image").is_file()


def _images_in_use() -> set[str]:
    """The images a running lab booted (never removed under its feet)."""
    try:
        state = json.loads((config.STATE / "state.json").read_text())
    except (OSError, ValueError):
        return set()
    return set((state.get("images") or {}).values())


def build(suite: str = config.DEFAULT_RELEASE, force: bool = False) -> Path:
    target = image_path(suite)
    if is_built(suite) and not force:
        say(f"{suite} image {target.name} is cached ({target})")
        return target
    images = target.parent
    images.mkdir(parents=True, exist_ok=True)
    partial = images / f"{target.name}.partial"
    for stale in images.glob(f"{suite}-*.partial"):
        say(f"removing an interrupted build: {stale}")
        shutil.rmtree(stale)
    log = images / f"{target.name}.log"
    log.write_text("")
    t0 = time.monotonic()
    try:
        with Step(f"debootstrap Debian {config.RELEASES[suite]} ({suite}, minbase)", tail=log):
            run_logged(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus",
                        suite, str(partial), config.DEBIAN_MIRROR], log)
        build_dir = partial / "var" / "tmp" / "mfbuild"  # nspawn mounts a tmpfs on /tmp
        build_dir.mkdir(parents=True)
        for rel in RECIPE_FILES:
            shutil.copy(config.REPO / rel, build_dir / Path(rel).name)
        if HOST_CA_BUNDLE.is_file():
            shutil.copy(HOST_CA_BUNDLE, build_dir / "build-ca.crt")
        with Step(f"installing the mail stack and salt into the {suite} image", tail=log):
            run_logged(["systemd-nspawn", "-q", "-D", str(partial), "--register=no", "--keep-unit",
                        "--resolv-conf=copy-host", "--timezone=off", "--pipe",
                        "/bin/sh", "/var/tmp/mfbuild/recipe.sh", suite], log)
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
    evict_old(images, suite, target, _images_in_use())
    say(f"{suite} image {target.name} built in {time.monotonic() - t0:.0f}s")
    return target


def evict_old(images: Path, suite: str, keep: Path, in_use: set[str]) -> list[str]:
    """Remove older recipes' images of `suite` (and images named before releases were): they
    only waste disk. Other releases' images, `keep` and images a running lab booted stay."""
    gone = []
    for old in sorted(images.iterdir()):
        mine = old.name.startswith(f"{suite}-") or not old.name.startswith(tuple(f"{r}-" for r in config.RELEASES))
        if old.is_dir() and mine and old != keep and str(old) not in in_use:
            shutil.rmtree(old, ignore_errors=True)
            gone.append(old.name)
    return gone


def run_in_image(suite: str, argv: list[str], binds_ro: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one command of a release's image without booting it (a throwaway tmpfs overlay:
    the cached image is never written), e.g. that release's `doveconf` or `postconf`."""
    cmd = ["systemd-nspawn", "-q", "-D", str(build(suite)), "--register=no", "--keep-unit",
           "--volatile=overlay", "--private-network", "--timezone=off", "--resolv-conf=off",
           "--pipe", "--link-journal=no"]
    cmd += [f"--bind-ro={src}:{dst}" for src, dst in (binds_ro or {}).items()]
    return subprocess.run(cmd + argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
