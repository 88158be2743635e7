"""
MariaDB administration for the mail host: the mail database, its schema, and the
least-privilege accounts (Postfix lookups, Dovecot auth, the virtual-user sync).

Runs the ``mariadb`` client as root over the local socket (unix_socket auth, no admin
password anywhere). SQL goes in on stdin, so no password shows in a process list.
"""
import re

from salt.exceptions import CommandExecutionError

from mailfleet_sql import literal as _literal  # salt://_utils: the one SQL escaper

__virtualname__ = "mailfleet_db"

IDENT = re.compile(r"^[A-Za-z0-9_]{1,64}$")
CREATE_TABLE = re.compile(r"CREATE TABLE (?:IF NOT EXISTS )?`([^`]+)`", re.I)


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("query", "missing_tables", "ensure_database", "user_state", "ensure_user")


def __virtual__():
    return __virtualname__


def ident(name, what="identifier"):
    if not IDENT.match(str(name)):
        raise CommandExecutionError(f"{what} {name!r}: only letters, digits and _ (1-64)")
    return f"`{name}`"


def query(sql, database=None):
    """
    Run SQL as the local root account; return rows as lists of strings.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_db.query 'SELECT domain FROM domain' database=postfix
    """
    argv = ["mariadb", "--batch", "--skip-column-names", "--raw"]
    if database:
        argv.append(f"--database={database}")
    res = __salt__["cmd.run_all"](argv, stdin=sql, python_shell=False, output_loglevel="quiet")
    if res["retcode"] != 0:
        raise CommandExecutionError(f"mariadb: {res['stderr'].strip()}")
    return [line.split("\t") for line in res["stdout"].splitlines() if line]


def schema_tables(schema_path):
    with open(schema_path, encoding="utf-8") as handle:
        return CREATE_TABLE.findall(handle.read())


def missing_tables(name, schema_path):
    """
    Tables the schema file creates that database ``name`` lacks ([] when complete).

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_db.missing_tables postfix /var/lib/mailfleet/postfixadmin-3.3.13.sql
    """
    present = {row[0] for row in query(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = {_literal(name)}")}
    return [t for t in schema_tables(schema_path) if t not in present]


def ensure_database(name, schema_path):
    """
    Create database ``name`` (utf8mb4) and load the schema file; idempotent.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_db.ensure_database postfix /var/lib/mailfleet/postfixadmin-3.3.13.sql
    """
    query(f"CREATE DATABASE IF NOT EXISTS {ident(name, 'database')} "
          f"CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
    with open(schema_path, encoding="utf-8") as handle:
        query(handle.read(), database=name)


def user_state(user, password, database):
    """
    What an account looks like now: exists, password matches, privileges on ``database``.

    The password is compared, never returned.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_db.user_state postfix_ro "$PASSWORD" postfix
    """
    rows = query(f"SELECT authentication_string = PASSWORD({_literal(password)}) FROM mysql.user "
                 f"WHERE User = {_literal(user)} AND Host = 'localhost'")
    grantee = _literal(f"'{user}'@'localhost'")
    privs = {r[0] for r in query(
        f"SELECT privilege_type FROM information_schema.schema_privileges "
        f"WHERE grantee = {grantee} AND table_schema = {_literal(database)}")}
    global_privs = {r[0] for r in query(
        f"SELECT privilege_type FROM information_schema.user_privileges "
        f"WHERE grantee = {grantee}")} - {"USAGE"}
    return {"exists": bool(rows), "password_ok": bool(rows) and rows[0][0] == "1",
            "privileges": sorted(privs), "global_privileges": sorted(global_privs)}


def ensure_user(user, password, database, privileges):
    """
    Make ``user``@localhost exist with exactly ``privileges`` on ``database``, nothing global.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_db.ensure_user postfix_ro "$PASSWORD" postfix '[SELECT]'
    """
    account = f"{_literal(user)}@'localhost'"
    db = ident(database, "database")
    wanted = sorted({p.upper() for p in privileges})
    for priv in wanted:
        if not re.match(r"^[A-Z ]+$", priv):
            raise CommandExecutionError(f"privilege {priv!r} is not a privilege name")
    query(f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_literal(password)};\n"
          f"ALTER USER {account} IDENTIFIED BY {_literal(password)};\n"
          f"REVOKE ALL PRIVILEGES, GRANT OPTION FROM {account};\n"
          f"GRANT {', '.join(wanted)} ON {db}.* TO {account};")
