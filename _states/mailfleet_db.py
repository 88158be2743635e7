"""
States for the mail database and its least-privilege accounts (see the mailfleet_db module).
"""

__virtualname__ = "mailfleet_db"


def __virtual__():
    return __virtualname__


def _ret(name):
    return {"name": name, "result": True, "changes": {}, "comment": ""}


def database(name, schema):
    """
    Database ``name`` exists with every table of the ``schema`` SQL file (a local path).

    .. code-block:: yaml

        postfix:
          mailfleet_db.database:
            - schema: /var/lib/mailfleet/postfixadmin-3.3.13.sql
    """
    ret = _ret(name)
    missing = __salt__["mailfleet_db.missing_tables"](name, schema)
    if not missing:
        ret["comment"] = f"database {name} has every table of {schema}"
        return ret
    ret["changes"] = {"tables created": missing}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"database {name} would get {len(missing)} tables"
        return ret
    __salt__["mailfleet_db.ensure_database"](name, schema)
    still = __salt__["mailfleet_db.missing_tables"](name, schema)
    if still:
        ret["result"] = False
        ret["comment"] = f"schema loaded but tables still missing: {', '.join(still)}"
        return ret
    ret["comment"] = f"database {name}: {len(missing)} tables created"
    return ret


def user(name, password, database, privileges):
    """
    Account ``name``@localhost exists, with ``password`` and exactly ``privileges`` on
    ``database`` (nothing global). The password never appears in changes or comments.

    .. code-block:: yaml

        mailfleet_postfix:
          mailfleet_db.user:
            - password: {{ secret }}
            - database: postfix
            - privileges: [SELECT]
    """
    ret = _ret(name)
    wanted = sorted({p.upper() for p in privileges})
    now = __salt__["mailfleet_db.user_state"](name, password, database)
    diff = {}
    if not now["exists"]:
        diff["account"] = "created"
    elif not now["password_ok"]:
        diff["password"] = "changed"
    if now["privileges"] != wanted:
        diff["privileges"] = {"old": now["privileges"], "new": wanted}
    if now["global_privileges"]:
        diff["global privileges revoked"] = now["global_privileges"]
    if not diff:
        ret["comment"] = f"account {name} is as declared ({', '.join(wanted)} on {database})"
        return ret
    ret["changes"] = diff
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"account {name} would be updated"
        return ret
    __salt__["mailfleet_db.ensure_user"](name, password, database, wanted)
    ret["comment"] = f"account {name} updated"
    return ret
