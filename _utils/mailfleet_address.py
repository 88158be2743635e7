"""
The one address normaliser (issue 13): every address that arrives from a minion (a report,
a grain, a log line) or from pillar goes through here before anything acts on it.

- :func:`address`: canonical text of one address (IPv4-mapped IPv6 as IPv4, IPv6 compressed
  lower-case), or ValueError. A scope id (``fe80::1%eth0``) is refused: nft cannot take it,
  and one such element made a whole ban batch fail on every host. ``ban=True`` also refuses
  what must never be banned or cannot be a client (loopback, unspecified, multicast,
  link-local, reserved, the IPv4 broadcast address).
- :func:`network`: an allow-list network, no wider than /16 (IPv4) or /48 (IPv6): a /0 in a
  list would switch bans off for the whole fleet. ``single=True`` (a host's own addresses,
  as grains report them) accepts one address only, never a network.

Pure: no Salt imports; the runners, the ban module, the log parser and the tests import it.
"""
import ipaddress

__virtualname__ = "mailfleet_address"

MAX_TEXT = 64
# The widest network an allow-list may hold, per IP version.
WIDEST = {4: 16, 6: 48}


def __virtual__():
    return __virtualname__


def _parse(text, what):
    if not isinstance(text, str) or not 2 <= len(text.strip()) <= MAX_TEXT:
        raise ValueError(f"not an {what}: {str(text)[:80]!r}")
    text = text.strip()
    if "%" in text:
        raise ValueError(f"{text[:80]!r}: a scope id is not accepted")
    return text


def address(text, ban=False):
    """Canonical text of one IP address, or raise ValueError naming why."""
    text = _parse(text, "address")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an address: {text[:80]!r}") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ban and (ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved
                or (ip.version == 4 and ip == ipaddress.IPv4Address("255.255.255.255"))):
        raise ValueError(f"{ip} is not a unicast address that may be banned")
    return str(ip)


def network(text, single=False):
    """An ``ip_network`` for an allow-list entry, or raise ValueError.

    ``single``: the entry must be one address (a host's grain), returned as a /32 or /128."""
    text = _parse(text, "address or network")
    if single:
        return ipaddress.ip_network(address(text))
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"not an address or network: {text[:80]!r}") from None
    if net.version == 6 and net.prefixlen >= 96 and net.network_address.ipv4_mapped is not None:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    if net.prefixlen < WIDEST[net.version]:
        raise ValueError(f"{net} is wider than a /{WIDEST[net.version]}: refused")
    return net
