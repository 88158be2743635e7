"""
State: the PostfixAdmin virtual-user tables match the ``mailfleet`` pillar.

All the work (validation, diff, the one transaction) is the ``mailfleet_vusers``
execution module's; this is the state-shaped wrapper.

.. code-block:: yaml

    mailfleet-virtual-users:
      mailfleet_vusers.synced:
        - vmail_dir: /var/vmail
"""

__virtualname__ = "mailfleet_vusers"


def __virtual__():
    if "mailfleet_vusers.sync" in __salt__:
        return __virtualname__
    return (False, "the mailfleet_vusers execution module is not available")


def synced(name, vmail_dir="/var/vmail", host_filter=True, batch_size=1000, socket=None):
    """
    Domains, mailboxes, aliases and alias domains declared in ``mailfleet:domains`` are in
    the database exactly as declared; managed rows gone from the pillar are deactivated
    (purged after ``retention: {purge_after_days: N}``, maildir archived). Honours test
    mode: the exact diff, nothing written. Any pillar error: nothing written, every error
    listed with its pillar path.

    name
        free text
    vmail_dir
        maildir base (purged mailboxes are archived under ``<vmail_dir>/.archive/``)
    host_filter
        ignore domains whose ``hosts`` list does not name this minion (default True)
    batch_size
        rows per batch inside the transaction
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: the OS's)
    """
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    test = bool(__opts__.get("test", False))
    res = __salt__["mailfleet_vusers.sync"](
        test=test, vmail_dir=vmail_dir, host_filter=host_filter, batch_size=batch_size, socket=socket
    )
    ret["comment"] = res["comment"]
    if not res["result"]:
        return ret
    if res["changed"]:
        ret["changes"] = res["changes"]
        ret["result"] = None if test else True
    else:
        ret["result"] = True
    return ret
