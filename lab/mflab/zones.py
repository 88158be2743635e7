"""Zone files and BIND configuration for the lab DNS (pure: data in, text out)."""
from . import config
from .config import Host

TSIG_NAME = "mailfleet-lab"
SERIAL = 1
DNSBL_ZONE = "dnsbl.lab.test"
REVERSE_ZONE = "0.18.198.in-addr.arpa"


def _soa(origin: str) -> list[str]:
    return [f"$ORIGIN {origin}.", "$TTL 60",
            f"@ IN SOA dns.{config.DOMAIN}. hostmaster.{config.DOMAIN}. "
            f"{SERIAL} 3600 600 86400 60",
            f"@ IN NS dns.{config.DOMAIN}."]


def lab_zone(fleet: list[Host]) -> str:
    lines = _soa(config.DOMAIN)
    lines += [f"salt IN A {config.MASTER_IP}", f"master IN A {config.MASTER_IP}"]
    lines += [f"{h.name} IN A {h.ip}" for h in fleet]
    return "\n".join(lines) + "\n"


def reverse_zone(fleet: list[Host]) -> str:
    lines = _soa(REVERSE_ZONE)
    lines.append(f"1 IN PTR master.{config.DOMAIN}.")
    lines += [f"{h.octet} IN PTR {h.fqdn}." for h in fleet]
    return "\n".join(lines) + "\n"


def mail_domain_zone(domain: str) -> str:
    """A lab mail domain's zone as the lab creates it: SOA and NS only. Its MX, SPF, DKIM,
    DMARC ... are published by mailfleet (`salt-run mailfleet_dns.publish`, RFC 2136)."""
    return "\n".join(_soa(domain)) + "\n"


def dnsbl_zone() -> str:
    # RFC 5782 section 5: 127.0.0.2 must be listed, 127.0.0.1 must not.
    lines = _soa(DNSBL_ZONE)
    lines += ["2.0.0.127 IN A 127.0.0.2",
              '2.0.0.127 IN TXT "mailfleet lab DNSBL test entry (RFC 5782)"']
    return "\n".join(lines) + "\n"


def zones(fleet: list[Host]) -> dict[str, str]:
    by_name = {h.name: h for h in fleet}
    out = {config.DOMAIN: lab_zone(fleet), REVERSE_ZONE: reverse_zone(fleet),
           DNSBL_ZONE: dnsbl_zone()}
    for domain, hostname in config.MAIL_DOMAINS.items():
        if hostname in by_name:
            out[domain] = mail_domain_zone(domain)
    return out


def named_conf(zone_names: list[str], secret: str) -> str:
    """named.conf.options + local: authoritative only, TSIG-signed updates on lab zones."""
    parts = [
        f'key "{TSIG_NAME}" {{ algorithm hmac-sha256; secret "{secret}"; }};',
        "options {",
        '    directory "/var/cache/bind";',
        "    recursion no;",
        "    allow-query { any; };",
        "    allow-query-cache { none; };",
        "    allow-transfer { none; };",
        "    listen-on { any; };",
        "    listen-on-v6 { none; };",
        "    dnssec-validation no;",
        "    notify no;",
        "};",
    ]
    for name in zone_names:
        parts += [f'zone "{name}" {{', "    type primary;",
                  f'    file "/var/lib/bind/{name}.zone";',
                  f'    allow-update {{ key "{TSIG_NAME}"; }};', "};"]
    return "\n".join(parts) + "\n"


def tsig_keyfile(secret: str) -> str:
    """The key in BIND syntax, usable by nsupdate -k and by our dnspython publisher."""
    return f'key "{TSIG_NAME}" {{\n    algorithm hmac-sha256;\n    secret "{secret}";\n}};\n'


def tsig_secret_of(keyfile: str) -> str:
    """The secret back from the text tsig_keyfile() wrote (the lab reads only its own file)."""
    marker = 'secret "'
    if marker not in keyfile:
        raise ValueError("not a lab TSIG key file")
    return keyfile.split(marker, 1)[1].split('"', 1)[0]
