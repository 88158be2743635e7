"""
Reports signed as this host's detector signs them (issue 13): the postmaster's way to send a
report by hand (re-send one, or check the path end to end), the tests' way to send one.

The master acts on no unsigned report (_utils/mailfleet_report.py); the key is this host's
own, from ``<watch_dir>/report.key`` (written by mail.defense) or else the pillar
``mailfleet_report_key`` the master hands this host. The key is never returned.

CLI Example:

.. code-block:: bash

    salt mail01.example.net mailfleet_signed.fire '{"host": "mail01.example.net", "offenders": []}' mailfleet/abuse/report
"""
import json
import logging
import os

# salt://_utils (the loader puts the utils directories on sys.path while it loads)
import mailfleet_report

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_signed"
WATCH_DIR = "/var/lib/mailfleet/watch"  # fixed by the engine stanza (mailfleet_watch.ENGINE_STANZA)
TAGS = ("mailfleet/abuse/report", "mailfleet/dnsbl/transition", "mailfleet/cert/problem")


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("fire",)


def __virtual__():
    return __virtualname__


def _key():
    try:
        with open(os.path.join(WATCH_DIR, "report.key"), encoding="utf-8") as fh:
            key = json.load(fh)
        if isinstance(key, dict) and key.get("kid") and key.get("key"):
            return key
    except (OSError, ValueError):
        pass
    key = __pillar__.get("mailfleet_report_key")
    return key if isinstance(key, dict) and key.get("kid") and key.get("key") else None


def fire(data, tag):
    """
    Sign ``data`` (a mapping or its JSON text) with this host's report key and fire it to
    the master on ``tag`` (one of the report tags). Returns True when sent.

    CLI Example:

    .. code-block:: bash

        salt-call mailfleet_signed.fire '{"host": "mail01.lab.test", "offenders": []}' mailfleet/abuse/report
    """
    if tag not in TAGS:
        raise ValueError(f"tag must be one of {', '.join(TAGS)}")
    if isinstance(data, str):
        data = json.loads(data)
    if not isinstance(data, dict):
        raise ValueError("data must be a mapping")
    key = _key()
    if key is None:
        raise ValueError("this host has no report key (pillar mailfleet_report_key; apply mail.defense)")
    return __salt__["event.fire_master"](mailfleet_report.sign(key, tag, data), tag)
