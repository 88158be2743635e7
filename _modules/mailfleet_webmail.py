"""
Webmail (Roundcube) and admin panel (PostfixAdmin 3.3) on a mail host: settings checks and
PostfixAdmin's admin accounts (state ``mailfleet_webmail``, SLS ``mail.webmail``).

Pillar (per host; secrets only in that host's pillar)::

    mailfleet:
      webmail:                        # Roundcube at https://<myhostname>/roundcube/
        enabled: true
        product_name: Example Webmail
        des_key: 24-character-secret!!  # exactly 24 characters: encrypts the IMAP password in the session
        db_password: ...              # its own database `roundcube`, account `roundcube`
      postfixadmin:                   # PostfixAdmin at https://<myhostname>/postfixadmin/
        enabled: true
        allow: [192.0.2.0/24]         # networks that may reach it (everyone else: 403)
        db_password: ...              # account `mailfleet_pfadmin` on the mail database
        setup_password: "$2y$10$..."  # PHP password_hash() (bcrypt) of setup.php's password
        admins:                       # superadmins; password: a {SCHEME} hash (Dovecot's)
          admin@example.test: "{ARGON2ID}$argon2id$..."

Pure functions (``problems``, ``admin_sql``) are unit-tested; the Salt glue is thin.
"""
import ipaddress
import re

from mailfleet_sql import literal as _literal  # salt://_utils: the one SQL escaper

__virtualname__ = "mailfleet_webmail"

EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,63}$")
SCHEME_HASH = re.compile(r"^\{[A-Z0-9.-]+\}\S+$")
BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
# Ends up inside PHP single-quoted strings and a DSN: keep it to safe characters.
SECRET = re.compile(r"^[A-Za-z0-9_.:,+=@%^~!/-]+$")


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("problems", "admin_status", "ensure_admin", "db_user_exists", "drop_db_user")


def __virtual__():
    return __virtualname__


def problems(cfg):
    """
    "pillar key: what is wrong" strings for mailfleet:webmail / mailfleet:postfixadmin.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_webmail.problems '{"webmail": {"enabled": true}}'
    """
    out = []
    web = cfg.get("webmail") or {}
    pfa = cfg.get("postfixadmin") or {}
    for section, data in (("webmail", web), ("postfixadmin", pfa)):
        if not isinstance(data.get("enabled", False), bool):
            out.append(f"mailfleet:{section}:enabled: {data.get('enabled')!r} is not true/false")
    if web.get("enabled") is True:
        key = web.get("des_key")
        if not key:
            out.append("mailfleet:webmail:des_key: required, missing or empty")
        elif not isinstance(key, str) or len(key) != 24 or not SECRET.match(key):
            out.append("mailfleet:webmail:des_key: must be exactly 24 characters "
                       "(letters, digits, _.:,+=@%^~!/-)")
        name = web.get("product_name")
        if not isinstance(name, str) or not name.strip() or "'" in name or "\\" in name:
            out.append("mailfleet:webmail:product_name: a non-empty string without ' or \\")
        _secret(out, "webmail", web.get("db_password"))
    if pfa.get("enabled") is True:
        _secret(out, "postfixadmin", pfa.get("db_password"))
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
                if not EMAIL.match(str(name)):
                    out.append(f"mailfleet:postfixadmin:admins:{name}: not an e-mail address")
                if not isinstance(pw, str) or not SCHEME_HASH.match(pw) or "'" in pw:
                    out.append(f"mailfleet:postfixadmin:admins:{name}: not a {{SCHEME}} hash "
                               f"(salt-run mailfleet_password.hash)")
    return out


def _secret(out, section, value):
    if not value:
        out.append(f"mailfleet:{section}:db_password: required, missing or empty")
    elif not SECRET.match(str(value)):
        out.append(f"mailfleet:{section}:db_password: use letters, digits and _.:,+=@%^~!/- only")


def admin_sql(username, password_hash):
    """SQL making ``username`` a PostfixAdmin superadmin with this hash (idempotent)."""
    u, p = _literal(username), _literal(password_hash)
    return (
        "INSERT INTO admin (username, password, superadmin, created, modified, active) "
        f"VALUES ({u}, {p}, 1, NOW(), NOW(), 1) ON DUPLICATE KEY UPDATE "
        "password = VALUES(password), superadmin = 1, active = 1, modified = NOW();\n"
        "INSERT INTO domain_admins (username, domain, created, active) "
        f"SELECT {u}, 'ALL', NOW(), 1 FROM DUAL WHERE NOT EXISTS "
        f"(SELECT 1 FROM domain_admins WHERE username = {u} AND domain = 'ALL');\n"
        f"UPDATE domain_admins SET active = 1 WHERE username = {u} AND domain = 'ALL';\n")


def admin_status(username, password_hash, database="postfix"):
    """
    'ok', 'missing' or 'differs' (hash, superadmin or active flag) for one admin.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_webmail.admin_status admin@example-a.test '{ARGON2ID}...'
    """
    rows = __salt__["mailfleet_db.query"](
        f"SELECT password = {_literal(password_hash)} AND superadmin = 1 AND active = 1, "
        f"(SELECT COUNT(*) FROM domain_admins WHERE username = {_literal(username)} "
        f"AND domain = 'ALL' AND active = 1) FROM admin WHERE username = {_literal(username)}",
        database=database)
    if not rows:
        return "missing"
    return "ok" if rows[0] == ["1", "1"] else "differs"


def ensure_admin(username, password_hash, database="postfix"):
    """
    Make ``username`` a PostfixAdmin superadmin with ``password_hash`` (idempotent).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_webmail.ensure_admin admin@example-a.test '{ARGON2ID}...'
    """
    __salt__["mailfleet_db.query"](admin_sql(username, password_hash), database=database)


def db_user_exists(user):
    """
    True when the MariaDB account ``user``@localhost exists.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_webmail.db_user_exists roundcube
    """
    return bool(__salt__["mailfleet_db.query"](
        f"SELECT 1 FROM mysql.user WHERE User = {_literal(user)} AND Host = 'localhost'"))


def drop_db_user(user):
    """
    Drop the MariaDB account ``user``@localhost of an application switched off (its
    database stays).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_webmail.drop_db_user roundcube
    """
    __salt__["mailfleet_db.query"](f"DROP USER IF EXISTS {_literal(user)}@'localhost'")
