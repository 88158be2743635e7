"""
mailfleet virtual users on a mail host: PostfixAdmin 3.3 rows in MariaDB, synchronised from
the ``mailfleet`` pillar (the ``mail.vusers`` state calls ``sync``). Thin Salt glue: the
sync is ``_utils/mailfleet_vusers_sync.py`` (validation ``mailfleet_pillar``, rows
``mailfleet_vusers_rows``, diff ``mailfleet_vusers_diff``, database ``mailfleet_vusers_db``),
imported plainly (Salt puts the utils directories on ``sys.path``); its docstring has the
storage and ownership rules.
"""
# salt://_utils; private names, so that the loader lists only the three functions below.
from mailfleet_pillar import validate_pillar as _validate_pillar
from mailfleet_vusers_db import validate_db as _validate_db
from mailfleet_vusers_rows import DEFAULT_SOCKET as _DEFAULT_SOCKET
from mailfleet_vusers_rows import DEFAULT_VMAIL
from mailfleet_vusers_sync import run_sync as _run_sync

__virtualname__ = "mailfleet_vusers"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("validate", "diff", "sync")


def __virtual__():
    return __virtualname__




def _pillar_cfg(mailfleet):
    if mailfleet is not None:
        return mailfleet
    # 3008 masks values returned by pillar.get inside execution modules: read __pillar__.
    return __pillar__.get("mailfleet")


def _host(host_filter):
    return __opts__.get("id") if host_filter else None


def _socket(socket):
    if socket:
        return socket
    # The mail.vusers state passes the formula's lookup.mysql_socket (salt/mail/parameters);
    # a call from the CLI reads the pillar's override, else Debian's socket.
    lookup = (__pillar__.get("mailfleet") or {}).get("lookup") or {}
    return lookup.get("mysql_socket") or _DEFAULT_SOCKET


def validate(mailfleet=None):
    """
    Validate the ``mailfleet`` pillar (or the ``mailfleet`` mapping given) without
    touching the database. Returns ``{'result', 'errors', 'warnings'}``; every message
    names its pillar path.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.validate
    """
    cfg = _pillar_cfg(mailfleet)
    _, errors, warnings = _validate_pillar(cfg)
    errors += _validate_db(cfg.get("db") if isinstance(cfg, dict) else None)
    return {"result": not errors, "errors": errors, "warnings": warnings}


def diff(full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, socket=None, mailfleet=None):
    """
    Show what a sync would change, writing nothing: counts plus the first 10 items per
    table and kind (``full=True``: every item).

    full
        list every item instead of the first 10
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base, for the archive paths of purged mailboxes (default /var/vmail)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: pillar
        ``mailfleet:lookup:mysql_socket``, else ``/run/mysqld/mysqld.sock``)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt 'mail01.lab.test' mailfleet_vusers.diff
        salt 'mail01.lab.test' mailfleet_vusers.diff full=True
    """
    return sync(test=True, full=full, host_filter=host_filter, vmail_dir=vmail_dir, socket=socket,
                mailfleet=mailfleet)


def sync(test=None, full=False, host_filter=True, vmail_dir=DEFAULT_VMAIL, batch_size=1000, socket=None,
         mailfleet=None, batch_callback=None):
    """
    Bring the PostfixAdmin tables in line with the ``mailfleet`` pillar: validate
    everything first (any error: nothing is written, every error is listed with its
    pillar path), then inserts, updates, deactivations and retention purges in ONE
    transaction, in batches. ``test=True`` (or the minion running in test mode): the
    exact diff, nothing written.

    Returns ``result``, ``changed``, ``changes`` (per table and kind: count and first 10
    items), ``counts``, ``comment``, ``errors``, ``warnings`` (first 10),
    ``warning_count``, ``seconds`` and ``timings``.

    test
        only compute the diff (default: the minion's ``test`` option)
    full
        list every changed item instead of the first 10 per kind
    host_filter
        skip domains whose ``hosts`` list does not name this minion (default True)
    vmail_dir
        maildir base; purged mailboxes are moved to ``<vmail_dir>/.archive/`` (default
        /var/vmail)
    batch_size
        rows per executemany batch (default 1000)
    socket
        MariaDB's unix socket when ``mailfleet:db`` names none (default: pillar
        ``mailfleet:lookup:mysql_socket``, else ``/run/mysqld/mysqld.sock``)
    mailfleet
        use this mapping instead of the ``mailfleet`` pillar

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_vusers.sync
        salt '*mail*' mailfleet_vusers.sync test=True
    """
    if test is None:
        test = bool(__opts__.get("test", False))
    ret = _run_sync(_pillar_cfg(mailfleet), test=test, host=_host(host_filter), vmail_dir=vmail_dir,
                   batch_size=int(batch_size), batch_callback=batch_callback, full=full, socket=_socket(socket))
    if not ret["result"]:
        __context__["retcode"] = 1
    return ret
