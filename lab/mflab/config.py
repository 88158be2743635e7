"""The lab's fixed facts: names, addresses, paths. One place, so tests and tools agree."""
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAB_SRC = REPO / "lab"

# Everything a running lab owns on this machine lives under STATE (removed by `down`);
# images are cached under CACHE (kept, keyed by the recipe's hash).
STATE = Path(os.environ.get("MAILFLEET_LAB_STATE", "/run/mailfleet-lab"))
CACHE = Path(os.environ.get("MAILFLEET_LAB_CACHE", "/var/cache/mailfleet-lab"))

BRIDGE = "mflab0"
NET_PREFIX = "198.18.0"
NET = f"{NET_PREFIX}.0/24"
MASTER_IP = f"{NET_PREFIX}.1"
DOMAIN = "lab.test"
NFT_TABLE = "mailfleet_lab"          # host-side guard: nothing leaves the bridge
ROUTE_TABLE = 1818                   # policy routing table for lab sources
MACHINE_PREFIX = "mf-"               # nspawn machine names: mf-dns, mf-mail01, ...
DEBIAN_MIRROR = os.environ.get("MAILFLEET_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Debian releases the lab runs: suite -> version. Each has its own base image, built from one
# recipe. Roles other than mail hosts always run DEFAULT_RELEASE; each mail host runs the
# release MAILFLEET_LAB_RELEASES names for it (`mail01:bookworm,mail02:trixie`), else
# DEFAULT_MAIL_RELEASES, else DEFAULT_RELEASE.
RELEASES = {"bookworm": "12", "trixie": "13"}
DEFAULT_RELEASE = "bookworm"
DEFAULT_MAIL_RELEASES: dict[str, str] = {"mail02": "trixie"}  # the default lab is mixed
MAIL_DOMAINS = {"example-a.test": "mail01", "example-b.test": "mail02"}

# Services only mail hosts run; other roles mask them so nothing starts by accident.
MAIL_ONLY_UNITS = ("postfix.service", "dovecot.service", "mariadb.service", "rspamd.service",
                   "nginx.service", "certbot.timer", "redis-server.service")
PHP_FPM_UNIT = {"bookworm": "php8.2-fpm.service", "trixie": "php8.4-fpm.service"}


def check_release(suite: str) -> str:
    if suite not in RELEASES:
        raise SystemExit(f"lab: unknown Debian release {suite!r} (known: {', '.join(RELEASES)})")
    return suite


def mail_only_units(release: str) -> tuple[str, ...]:
    return MAIL_ONLY_UNITS + (PHP_FPM_UNIT[release],)


def mail_releases(raw: str | None = None) -> dict[str, str]:
    """MAILFLEET_LAB_RELEASES (`mail01:bookworm,mail02:trixie`) as {host name: suite}."""
    raw = os.environ.get("MAILFLEET_LAB_RELEASES", "") if raw is None else raw
    chosen = dict(DEFAULT_MAIL_RELEASES)
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, suite = item.partition(":")
        if not sep or not name.startswith("mail"):
            raise SystemExit(f"MAILFLEET_LAB_RELEASES: {item!r} is not HOST:RELEASE "
                             f"(for example mail02:trixie)")
        if suite not in RELEASES:
            raise SystemExit(f"MAILFLEET_LAB_RELEASES: {item!r}: unknown release {suite!r} "
                             f"(known: {', '.join(RELEASES)})")
        chosen[name] = suite
    return chosen


@dataclass(frozen=True)
class Host:
    name: str
    octet: int
    role: str  # dns | acme | mail | client
    release: str = DEFAULT_RELEASE

    @property
    def ip(self) -> str:
        return f"{NET_PREFIX}.{self.octet}"

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{DOMAIN}"

    @property
    def machine(self) -> str:
        return MACHINE_PREFIX + self.name


def mail_count() -> int:
    raw = os.environ.get("MAILFLEET_LAB_MAIL_HOSTS", "2")
    try:
        count = int(raw)
    except ValueError:
        raise SystemExit(f"MAILFLEET_LAB_MAIL_HOSTS must be a number, not {raw!r}")
    if not 1 <= count <= 80:
        raise SystemExit(f"MAILFLEET_LAB_MAIL_HOSTS must be 1..80, not {count}")
    return count


def mail_host(number: int, releases: dict[str, str] | None = None) -> Host:
    name = f"mail{number:02d}"
    chosen = mail_releases() if releases is None else releases
    return Host(name, 10 + number, "mail", chosen.get(name, DEFAULT_RELEASE))


def hosts(mail_hosts: int | None = None, releases: dict[str, str] | None = None) -> list[Host]:
    """The lab's hosts; a running lab passes what it recorded at `up` (not today's env)."""
    count = mail_count() if mail_hosts is None else mail_hosts
    chosen = mail_releases() if releases is None else releases
    fleet = [Host("dns", 2, "dns"), Host("acme", 3, "acme")]
    fleet += [mail_host(i, chosen) for i in range(1, count + 1)]
    fleet += [Host("outside", 100, "client"), Host("attacker", 101, "client")]
    return fleet
