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
SUITE = "bookworm"
MAIL_DOMAINS = {"example-a.test": "mail01", "example-b.test": "mail02"}

# Services only mail hosts run; other roles mask them so nothing starts by accident.
MAIL_ONLY_UNITS = ("postfix.service", "dovecot.service", "mariadb.service", "rspamd.service",
                   "nginx.service", "php8.2-fpm.service", "certbot.timer")


@dataclass(frozen=True)
class Host:
    name: str
    octet: int
    role: str  # dns | acme | mail | client

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


def hosts(mail_hosts: int | None = None) -> list[Host]:
    count = mail_count() if mail_hosts is None else mail_hosts
    fleet = [Host("dns", 2, "dns"), Host("acme", 3, "acme")]
    fleet += [Host(f"mail{i:02d}", 10 + i, "mail") for i in range(1, count + 1)]
    fleet += [Host("outside", 100, "client"), Host("attacker", 101, "client")]
    return fleet
