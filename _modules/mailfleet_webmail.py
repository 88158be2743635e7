"""
Webmail (Roundcube) and admin panel (PostfixAdmin 3.3) on a mail host: PostfixAdmin's
admin accounts and the database accounts of applications switched off (state ``mailfleet_webmail``, SLS ``mail.webmail``).

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

The settings are checked with every other pillar key by ``mail.validate``
(mailfleet_settings_check.webmail_problems). ``admin_sql`` is pure and unit-tested; the
Salt glue is thin.
"""

from mailfleet_sql import literal as _literal  # salt://_utils: the one SQL escaper

__virtualname__ = "mailfleet_webmail"



# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("admin_status", "ensure_admin", "db_user_exists", "drop_db_user")


def __virtual__():
    return __virtualname__


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
