"""
The rows a ``mailfleet`` pillar declares, in PostfixAdmin 3.3's tables (``domain``,
``mailbox``, ``alias``, ``alias_domain``), and the table layout every other part of the sync
shares (keys, the columns mailfleet keeps equal to the pillar, the columns it writes only on
insert). One job of the virtual-user sync (``mailfleet_vusers_sync`` drives it); pure.

Storage rules (PostfixAdmin 3.3): mailbox.username is the full address, maildir
``<domain>/<local>/``, quota in bytes; every mailbox has an alias row address=goto=itself;
a catch-all is the alias ``@<domain>``; booleans are tinyint 1/0. domain.maxquota is in MiB
(set PostfixAdmin's ``quota_multiplier`` to 1048576 so it agrees).
"""
import logging
import math

from mailfleet_pillar_values import MIB  # salt://_utils

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers_rows"


def __virtual__():
    return __virtualname__


DEFAULT_SOCKET = "/run/mysqld/mysqld.sock"
DEFAULT_VMAIL = "/var/vmail"
MANAGED_TABLE = "mailfleet_managed"
SUMMARY_LIMIT = 10
LOCK_NAME = "mailfleet_vusers"

TABLES = ("domain", "mailbox", "alias", "alias_domain")
KEY = {"domain": "domain", "mailbox": "username", "alias": "address", "alias_domain": "alias_domain"}
# Columns mailfleet keeps equal to the pillar; `active` is always last.
MANAGED_COLS = {
    "domain": ("description", "maxquota", "active"),
    "mailbox": ("password", "name", "quota", "local_part", "domain", "active"),
    "alias": ("goto", "domain", "active"),
    "alias_domain": ("target_domain", "active"),
}
# Columns written only when mailfleet inserts the row (an adopted row keeps its own).
INSERT_COLS = {
    "domain": ("aliases", "mailboxes", "quota", "transport", "backupmx"),
    "mailbox": ("maildir",),
    "alias": (),
    "alias_domain": (),
}
DOMAIN_INSERT_DEFAULTS = (0, 0, 0, "virtual", 0)  # unlimited aliases/mailboxes/quota
# Rows never touched, whatever `exclusive` says (PostfixAdmin's superadmin pseudo-domain).
PROTECTED = {("domain", "all")}


def desired_rows(model, host=None):
    """Rows the pillar declares, per table: ``{table: {key: (managed, insert_only)}}``
    with the column order of MANAGED_COLS / INSERT_COLS.

    ``host``: when given, domains whose ``hosts`` list does not name it are not served
    here and declare nothing. Returns ``(desired, retention)``: retention maps every
    pillar domain (and alias domain) to its purge_after_days (or None)."""
    desired = {t: {} for t in TABLES}
    domains, mailboxes, aliases, alias_domains = (desired[t] for t in TABLES)
    retention = {}
    host = host.lower() if isinstance(host, str) else None
    for dom, d in model["domains"].items():
        retention[dom] = d["retention"]
        for adom in d["alias_domains"]:
            retention[adom] = d["retention"]
        if host is not None and d["hosts"] is not None and host not in d["hosts"]:
            continue
        domains[dom] = (
            (d["description"], math.ceil(d["maxquota"] / MIB) if d["maxquota"] else 0, int(d["active"])),
            DOMAIN_INSERT_DEFAULTS,
        )
        at_dom = "@" + dom
        for local, m in d["mailboxes"].items():
            addr = local + at_dom
            active = int(m["active"])
            mailboxes[addr] = ((m["password"], m["name"], m["quota"], local, dom, active), (f"{dom}/{local}/",))
            aliases[addr] = ((addr, dom, active), ())
        for local, a in d["aliases"].items():
            aliases[local + at_dom] = ((",".join(a["targets"]), dom, 1), ())  # "" + at_dom: the catch-all
        for adom in d["alias_domains"]:
            alias_domains[adom] = ((dom, int(d["active"])), ())
    return desired, retention
