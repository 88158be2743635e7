"""
States for mail.webmail: PostfixAdmin's pillar admins exist; an application switched off
keeps no database account. (Its settings are checked by mail.validate.)
"""

__virtualname__ = "mailfleet_webmail"


def __virtual__():
    return __virtualname__


def admin(name, password, database="postfix"):
    """
    PostfixAdmin superadmin ``name`` exists, active, with this password hash. Only this row
    (and its 'ALL' domain_admins row) is touched: admins made in PostfixAdmin stay as they are.
    The hash never appears in changes or comments.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    status = __salt__["mailfleet_webmail.admin_status"](name, password, database)
    if status == "ok":
        ret["comment"] = f"PostfixAdmin superadmin {name} is as declared"
        return ret
    ret["changes"] = {"admin": "created" if status == "missing" else "password/superadmin/active set"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"PostfixAdmin superadmin {name} would be updated"
        return ret
    __salt__["mailfleet_webmail.ensure_admin"](name, password, database)
    if __salt__["mailfleet_webmail.admin_status"](name, password, database) != "ok":
        ret["result"] = False
        ret["comment"] = f"PostfixAdmin superadmin {name}: written but not as declared"
        return ret
    ret["comment"] = f"PostfixAdmin superadmin {name} updated"
    return ret


def db_user_absent(name):
    """Account ``name``@localhost does not exist (an application switched off keeps no access)."""
    ret = {"name": name, "result": True, "changes": {}, "comment": f"account {name} is absent"}
    if not __salt__["mailfleet_webmail.db_user_exists"](name):
        return ret
    ret["changes"] = {"account": "dropped"}
    if __opts__["test"]:
        ret["result"] = None
        ret["comment"] = f"account {name} would be dropped"
        return ret
    __salt__["mailfleet_webmail.drop_db_user"](name)
    ret["comment"] = f"account {name} dropped"
    return ret
