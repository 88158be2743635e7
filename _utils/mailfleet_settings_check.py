"""
The one checker of a mail host's pillar before the formula uses it: the merged formula
settings (defaults < OS parameters < pillar, :func:`problems`), the DKIM signing keys the
host received (:func:`dkim_problems`), the MTA-STS settings of its domains
(:func:`mta_sts_problems`) and its webmail / PostfixAdmin settings
(:func:`webmail_problems`). Each problem names its pillar key.

``mail.validate`` runs it first (state ``mailfleet_config.valid``, ``failhard``), and every
SLS that reads these pillars includes ``mail.validate``: a bad pillar stops the run before
any config file is touched, the services keep their last good configuration. Pure (no
Salt); imported plainly (Salt puts the utils directories on ``sys.path``).
"""
import ipaddress
import re

import mailfleet_records  # salt://_utils: the MTA-STS policy is checked by the code that builds it

__virtualname__ = "mailfleet_settings_check"

SUPPORTED_DOVECOT = ("2.3", "2.4")
SUPPORTED_OS = ("Debian", "FreeBSD")
REQUIRED = (
    ("tls", "contact"),
    ("db", "postfix_password"),
    ("db", "dovecot_password"),
    ("db", "sync_password"),
)
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
FQDN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The quota-status reply for an over-quota mailbox: an SMTP 4xx/5xx with a matching
# enhanced status code (RFC 3463: X.2.2 "Mailbox full"), then plain text that is safe
# unquoted in dovecot.conf and as a Postfix access(5) action.
OVERQUOTA_REPLY = re.compile(r"^([45])\d\d \1\.\d{1,3}\.\d{1,3} [A-Za-z0-9 .,:;()'/_-]{1,200}$")


def __virtual__():
    return __virtualname__


def _port(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def problems(cfg):
    """
    Return a list of "pillar key: what is wrong" strings; empty when the settings are usable.

    Pure function of the merged settings dict (no Salt needed), so it is unit-tested.
    """
    out = []
    if cfg.get("os_family_grain") not in SUPPORTED_OS:
        out.append(f"grains:os_family: {cfg.get('os_family_grain')!r} is not supported "
                   f"(supported: {', '.join(SUPPORTED_OS)})")
    for section, key in REQUIRED:
        if not (cfg.get(section) or {}).get(key):
            out.append(f"mailfleet:{section}:{key}: required, missing or empty")
    for section, key in REQUIRED[1:]:
        secret = (cfg.get(section) or {}).get(key)
        # These end up in Postfix map files and Dovecot's space-separated connect string.
        if secret and not re.match(r"^[A-Za-z0-9_.:,+=@%^~!/-]+$", str(secret)):
            out.append(f"mailfleet:{section}:{key}: use letters, digits and _.:,+=@%^~!/- only "
                       f"(no spaces, quotes or #)")
    contact = (cfg.get("tls") or {}).get("contact")
    if contact and not EMAIL.match(str(contact)):
        out.append(f"mailfleet:tls:contact: {contact!r} is not an e-mail address")
    host = cfg.get("host") or {}
    for key in ("myhostname", "mydomain"):
        if host.get(key) and not FQDN.match(str(host[key])):
            out.append(f"mailfleet:host:{key}: {host[key]!r} is not a fully qualified name")
    if not _port(host.get("ssh_port")):
        out.append(f"mailfleet:host:ssh_port: {host.get('ssh_port')!r} is not a port (1-65535)")
    for i, port in enumerate(host.get("extra_tcp_ports") or []):
        if not _port(port):
            out.append(f"mailfleet:host:extra_tcp_ports:{i}: {port!r} is not a port (1-65535)")
    for key in ("postscreen", "submissions", "reject_unknown_helo_hostname", "helo_required"):
        if not isinstance(host.get(key), bool):
            out.append(f"mailfleet:host:{key}: must be true or false, not {host.get(key)!r}")
    for i, net in enumerate(host.get("mynetworks_extra") or []):
        if not re.match(r"^[0-9a-fA-F:.\[\]]+/\d{1,3}$", str(net)):
            out.append(f"mailfleet:host:mynetworks_extra:{i}: {net!r} is not a network (CIDR)")
    major = str((cfg.get("lookup") or {}).get("dovecot_major"))
    if major not in SUPPORTED_DOVECOT:
        out.append(f"mailfleet:lookup:dovecot_major: Dovecot {major} is not supported "
                   f"(supported: {', '.join(SUPPORTED_DOVECOT)})")
    reply = (cfg.get("quota") or {}).get("overquota_reply")
    if reply is not None and not OVERQUOTA_REPLY.match(str(reply)):
        out.append(f"mailfleet:quota:overquota_reply: {reply!r} must be an SMTP 4xx/5xx reply "
                   f"with a matching enhanced code and plain text, e.g. '552 5.2.2 Mailbox is full'")
    limit = host.get("message_size_limit")
    if not isinstance(limit, int) or limit < 1024:
        out.append(f"mailfleet:host:message_size_limit: {limit!r} must be a byte count >= 1024")
    rspamd = cfg.get("rspamd") or {}
    if rspamd:
        # reject/quarantine would refuse or hold every message while rspamd is down.
        if rspamd.get("milter_default_action") not in ("accept", "tempfail"):
            out.append(f"mailfleet:rspamd:milter_default_action: "
                       f"{rspamd.get('milter_default_action')!r} must be accept or tempfail "
                       f"(mail is never refused because rspamd is down)")
        for key in ("milter_port", "controller_port"):
            if not _port(rspamd.get(key)):
                out.append(f"mailfleet:rspamd:{key}: {rspamd.get(key)!r} is not a port (1-65535)")
        for action, score in (rspamd.get("actions") or {}).items():
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                out.append(f"mailfleet:rspamd:actions:{action}: {score!r} must be a score or null")
    return out


DKIM_KEY_TYPES = ("rsa", "ed25519")
_DKIM_DOMAIN = re.compile(r"^((?!-)[a-z0-9-]{1,63}(?<!-)[.])+[a-z][a-z0-9-]*$")
_DKIM_SELECTOR = re.compile(r"^((?!-)[a-z0-9-]{1,63}(?<!-))([.](?!-)[a-z0-9-]{1,63}(?<!-))*$")


def dkim_problems(dkim):
    """Problems of pillar ``mailfleet:dkim`` ({domain: {selector, key_type, key}}, what the
    mailfleet_domains ext_pillar hands a serving host). The key itself is never quoted."""
    if dkim is None:
        return []
    if not isinstance(dkim, dict):
        return ["mailfleet:dkim: must map domains to {selector, key_type, key}"]
    out = []
    for domain in sorted(dkim, key=str):
        entry, pkey = dkim[domain], f"mailfleet:dkim:{domain}"
        if not _DKIM_DOMAIN.match(str(domain).lower()):
            out.append(f"{pkey}: not a domain name")
        elif not isinstance(entry, dict):
            out.append(f"{pkey}: must be a mapping with selector, key_type, key")
        elif not _DKIM_SELECTOR.match(str(entry.get("selector", ""))):
            out.append(f"{pkey}:selector: {entry.get('selector')} is not a DKIM selector")
        elif entry.get("key_type", "rsa") not in DKIM_KEY_TYPES:
            out.append(f"{pkey}:key_type: use rsa or ed25519")
        elif not entry.get("key"):
            out.append(f"{pkey}:key: missing or empty")
        elif (entry.get("key_type", "rsa") == "rsa") != str(entry["key"]).strip().startswith("-----BEGIN"):
            kind = "PEM" if entry.get("key_type", "rsa") == "rsa" else "base64 ed25519"
            out.append(f"{pkey}:key: not a {kind} private key")
    return out


def mta_sts_problems(domains):
    """Problems of the MTA-STS settings of ``domains`` ({domain: {"hosts", "dns":
    {"mta_sts"}}}, the part of ``mailfleet:domains`` that mail.mtasts reads). The domain
    name becomes a path below the web root: one that could leave it is refused."""
    out = []
    for domain, data in sorted((domains or {}).items(), key=lambda kv: str(kv[0])):
        dns = (data or {}).get("dns") or {}
        if not isinstance(dns, dict) or not dns.get("mta_sts"):
            continue
        if not isinstance(domain, str) or "/" in domain or domain.startswith(".") or "\n" in domain:
            out.append(f"mailfleet:domains:{domain!r}: not a domain name")
            continue
        res = mailfleet_records.mta_sts_policy(domain, {"hosts": (data or {}).get("hosts"),
                                                        "dns": {"mta_sts": dns["mta_sts"]}})
        out.extend(res["problems"])
    return out

# mailfleet:webmail / mailfleet:postfixadmin
ADMIN_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
SCHEME_HASH = re.compile(r"^\{[A-Z0-9.-]+\}\S+$")
BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
# Ends up inside PHP single-quoted strings and a DSN: keep it to safe characters.
WEBMAIL_SECRET = re.compile(r"^[A-Za-z0-9_.:,+=@%^~!/-]+$")


def webmail_problems(cfg):
    """"pillar key: what is wrong" strings for mailfleet:webmail / mailfleet:postfixadmin
    (each checked only when its application is enabled: a host without it needs no secrets)."""
    out = []
    sections = {}
    for section in ("webmail", "postfixadmin"):
        data = cfg.get(section) or {}
        if not isinstance(data, dict):
            out.append(f"mailfleet:{section}: a mapping (enabled: true/false and its settings), not {data!r}")
            data = {}
        sections[section] = data
    web, pfa = sections["webmail"], sections["postfixadmin"]
    for section, data in sections.items():
        if not isinstance(data.get("enabled", False), bool):
            out.append(f"mailfleet:{section}:enabled: {data.get('enabled')!r} is not true/false")
    if web.get("enabled") is True:
        key = web.get("des_key")
        if not key:
            out.append("mailfleet:webmail:des_key: required, missing or empty")
        elif not isinstance(key, str) or len(key) != 24 or not WEBMAIL_SECRET.match(key):
            out.append("mailfleet:webmail:des_key: must be exactly 24 characters "
                       "(letters, digits, _.:,+=@%^~!/-)")
        name = web.get("product_name")
        if not isinstance(name, str) or not name.strip() or "'" in name or "\\" in name:
            out.append("mailfleet:webmail:product_name: a non-empty string without ' or \\")
        _webmail_secret(out, "webmail", web.get("db_password"))
    if pfa.get("enabled") is True:
        _webmail_secret(out, "postfixadmin", pfa.get("db_password"))
        allow = pfa.get("allow")
        if not isinstance(allow, list) or not allow:
            out.append("mailfleet:postfixadmin:allow: a non-empty list of networks "
                       "(PostfixAdmin is refused to every other address)")
        else:
            for net in allow:
                try:
                    ipaddress.ip_network(str(net), strict=False)
                except ValueError:
                    out.append(f"mailfleet:postfixadmin:allow: {net!r} is not an address or network")
        setup = pfa.get("setup_password")
        if not setup:
            out.append("mailfleet:postfixadmin:setup_password: required (a bcrypt hash, "
                       "php password_hash())")
        elif not isinstance(setup, str) or not BCRYPT.match(setup):
            out.append("mailfleet:postfixadmin:setup_password: not a bcrypt hash ($2y$10$...)")
        admins = pfa.get("admins")
        if not isinstance(admins, dict) or not admins:
            out.append("mailfleet:postfixadmin:admins: at least one admin (address: {SCHEME} hash)")
        else:
            for name, pw in admins.items():
                if not ADMIN_EMAIL.match(str(name)):
                    out.append(f"mailfleet:postfixadmin:admins:{name}: not an e-mail address")
                if not isinstance(pw, str) or not SCHEME_HASH.match(pw) or "'" in pw:
                    out.append(f"mailfleet:postfixadmin:admins:{name}: not a {{SCHEME}} hash "
                               f"(salt-run mailfleet_password.hash)")
    return out


def _webmail_secret(out, section, value):
    if not value:
        out.append(f"mailfleet:{section}:db_password: required, missing or empty")
    elif not WEBMAIL_SECRET.match(str(value)):
        out.append(f"mailfleet:{section}:db_password: use letters, digits and _.:,+=@%^~!/- only")
