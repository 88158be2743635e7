"""
The master-owned host inventory (issue 13): pillar ``mailfleet:inventory``, one place,
written by the postmaster (not by any host)::

    mailfleet:
      inventory:
        mail01.example.net: {addresses: [192.0.2.11, "2001:db8::11"]}
        mail02.example.net: {addresses: [192.0.2.12], relay_address: 192.0.2.12}

What other hosts act on comes from here: the addresses a peer admits into its mynetworks
while a host relays through it, the relay address a listed host sends to, the fleet's own
addresses on the never-ban list. A host's grains are its claim about itself; where they
differ from the inventory the runners raise an alert naming the host.

Pure: no Salt imports.
"""
import ipaddress
import re

import mailfleet_address

__virtualname__ = "mailfleet_inventory"

KEY = "mailfleet:inventory"
MAX_HOSTS = 10_000
MAX_ADDRESSES = 16
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def __virtual__():
    return __virtualname__


def parse(raw):
    """({host: {"addresses": [...], "relay_address": str | None}}, problems): each entry
    checked on its own; a bad one is left out with a problem naming its pillar key."""
    hosts, problems = {}, []
    if raw is None:
        return hosts, problems
    if not isinstance(raw, dict):
        return hosts, [f"{KEY}: must be a mapping of minion ids"]
    if len(raw) > MAX_HOSTS:
        return hosts, [f"{KEY}: {len(raw)} hosts (max {MAX_HOSTS})"]
    for host, entry in raw.items():
        key = f"{KEY}:{str(host)[:80]}"
        if not isinstance(host, str) or not _ID_RE.fullmatch(host):
            problems.append(f"{key}: not a minion id")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{key}: must be a mapping with addresses")
            continue
        addrs = entry.get("addresses")
        if not isinstance(addrs, list) or not addrs or len(addrs) > MAX_ADDRESSES:
            problems.append(f"{key}:addresses: must be a list of 1 to {MAX_ADDRESSES} addresses")
            continue
        out, bad = [], None
        for a in addrs:
            try:
                if isinstance(a, str) and "/" in a:
                    raise ValueError(f"{a[:80]!r}: one address per entry, not a network")
                canon = mailfleet_address.address(a)
            except ValueError as exc:
                bad = f"{key}:addresses: {exc}"
                break
            if canon not in out:
                out.append(canon)
        if bad:
            problems.append(bad)
            continue
        relay = entry.get("relay_address")
        if relay is not None:
            try:
                relay = mailfleet_address.address(relay)
            except ValueError as exc:
                problems.append(f"{key}:relay_address: {exc}")
                continue
            if relay not in out:
                problems.append(f"{key}:relay_address: {relay} is not one of its addresses")
                continue
        hosts[host] = {"addresses": out, "relay_address": relay}
    return hosts, problems


def from_pillars(pillars):
    """The inventory from the master-compiled pillars of the fleet ({host: pillar}): the
    same file reaches every host, so the first that carries one is used."""
    for _host, pillar in sorted((pillars or {}).items()):
        inv = ((pillar or {}).get("mailfleet") or {}).get("inventory") if isinstance(pillar, dict) else None
        if isinstance(inv, dict) and inv:
            return inv
    return None


def relay_address(entry):
    """Where a relaying host sends: the entry's relay_address, else its first IPv4 address."""
    if entry.get("relay_address"):
        return entry["relay_address"]
    for a in entry["addresses"]:
        if ipaddress.ip_address(a).version == 4:
            return a
    return None


def unlisted(entry, claimed):
    """Global addresses a host claims (its grains) that its inventory entry does not list."""
    out = []
    for a in claimed or []:
        try:
            canon = mailfleet_address.address(a)
        except ValueError:
            continue
        ip = ipaddress.ip_address(canon)
        if ip.is_loopback or ip.is_link_local or ip.is_unspecified:
            continue
        if canon not in entry["addresses"] and canon not in out:
            out.append(canon)
    return out
