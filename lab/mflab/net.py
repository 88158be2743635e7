"""The lab bridge and the guards that keep 198.18.0.0/24 on this machine.

Two independent guards: a policy-routing table for lab source addresses whose default
route is `unreachable`, and an nftables forward chain that drops anything entering or
leaving the bridge towards another interface. IP forwarding is never switched on.
"""
import subprocess

from . import config

NFT_GUARD = f"""
table inet {config.NFT_TABLE} {{
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname "{config.BRIDGE}" oifname != "{config.BRIDGE}" counter drop
        oifname "{config.BRIDGE}" iifname != "{config.BRIDGE}" counter drop
    }}
}}
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def bridge_exists() -> bool:
    return _ip("link", "show", config.BRIDGE, check=False).returncode == 0


def up() -> None:
    if not bridge_exists():
        _ip("link", "add", config.BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{config.MASTER_IP}/24", "dev", config.BRIDGE)
        _ip("link", "set", config.BRIDGE, "up")
    table = str(config.ROUTE_TABLE)
    if f"lookup {table}" not in _ip("rule", "show").stdout:
        _ip("rule", "add", "from", config.NET, "lookup", table, "pref", table)
    _ip("route", "replace", config.NET, "dev", config.BRIDGE, "table", table)
    _ip("route", "replace", "unreachable", "default", "table", table)
    down_nft()
    subprocess.run(["nft", "-f", "-"], input=NFT_GUARD, text=True, check=True)


def down_nft() -> None:
    subprocess.run(["nft", "delete", "table", "inet", config.NFT_TABLE],
                   capture_output=True, check=False)


def down() -> None:
    down_nft()
    table = str(config.ROUTE_TABLE)
    while f"lookup {table}" in _ip("rule", "show").stdout:
        _ip("rule", "del", "from", config.NET, "lookup", table, "pref", table, check=False)
        if _ip("rule", "del", "pref", table, check=False).returncode != 0:
            break
    _ip("route", "flush", "table", table, check=False)
    if bridge_exists():
        _ip("link", "del", config.BRIDGE, check=False)


def leftovers() -> list[str]:
    """What a lab would leave behind on this machine; [] when clean."""
    found = []
    if bridge_exists():
        found.append(f"bridge {config.BRIDGE}")
    links = _ip("-o", "link", "show", check=False).stdout
    found += [f"link {line.split(':')[1].strip().split('@')[0]}" for line in links.splitlines()
              if f": vb-{config.MACHINE_PREFIX}" in line]
    if f"lookup {config.ROUTE_TABLE}" in _ip("rule", "show").stdout:
        found.append(f"ip rule for table {config.ROUTE_TABLE}")
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if config.NFT_TABLE in nft:
        found.append(f"nft table {config.NFT_TABLE}")
    return found
