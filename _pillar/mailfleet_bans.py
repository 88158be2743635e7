"""
ext_pillar ``mailfleet_bans``: the ban ledger's bans in force, handed to every minion as
pillar ``mailfleet_bans`` = {"active": {address: expires epoch}, "revoked": [addresses],
"generated": epoch}, for the state ``mailfleet_ban.reconciled``.

Why pillar: it is rendered by the master for each state run (never stale), travels over the
minion's authenticated, encrypted channel, and needs no peer-publish rights (a minion asking
the master's runners itself would need ``peer_run``, which any minion could then use).
The ledger (see _runners/mailfleet_defense.py) is read-only here.

The same ledger also holds each host's outbound mode (DNSBL listings, see
_runners/mailfleet_reroute.py): pillar ``mailfleet_outbound`` = {"mode": normal|relay|hold,
"relayhost", "peer", "queue_lifetime", "admit": [addresses this host relays for]}, rendered
into main.cf by salt/mail/files/postfix-main.cf.jinja (state ``mail.dnsbl``).

And the held SASL users (compromised accounts, _runners/mailfleet_accounts.py): pillar
``mailfleet_sasl_holds`` = {user: "hold" | "refuse"}, for the state ``mail.sasl_hold``.

Master config::

    ext_pillar:
      - mailfleet_bans: {}
"""
import importlib.util
import logging
import os
import sqlite3
import sys
import time

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_bans"


def __virtual__():
    return __virtualname__


def ext_pillar(minion_id, pillar, *args, **kwargs):  # pylint: disable=unused-argument
    path = __opts__.get("mailfleet_ledger") or os.path.join(__opts__["cachedir"], "mailfleet", "ledger.sqlite")  # noqa: F821
    now = time.time()
    out = {"active": {}, "revoked": [], "generated": now}
    if not os.path.exists(path):
        return {"mailfleet_bans": out, "mailfleet_outbound": {"mode": "normal", "admit": []},
                "mailfleet_sasl_holds": {}}
    memory = ((__opts__.get("mailfleet_defense") or {}).get("revoked_memory") or 7 * 86400)  # noqa: F821
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        # (the file may exist without the bans table: the DNSBL runner's tables came first)
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='bans'").fetchone():
            for addr, exp in db.execute("SELECT address, max(expires) FROM bans WHERE revoked IS NULL"
                                        " AND not_before<=? AND expires>? GROUP BY address", (now, now)):
                out["active"][addr] = exp
            revoked = {r[0] for r in db.execute("SELECT address FROM bans WHERE revoked>=?", (now - memory,))}
            out["revoked"] = sorted(revoked - set(out["active"]))
        outbound = _outbound(minion_id, db, now)
        holds = _sasl_holds(db)
    finally:
        db.close()
    return {"mailfleet_bans": out, "mailfleet_outbound": outbound, "mailfleet_sasl_holds": holds}


# --- held SASL users (compromised accounts, _runners/mailfleet_accounts.py) -----------------

def _sasl_holds(db):
    """{user: hold|refuse} in force, the same on every host (an account is held fleet-wide)."""
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sasl_holds'").fetchone():
            return {}
        return {r[0]: r[1] for r in db.execute(
            "SELECT user, mode FROM sasl_holds WHERE released IS NULL ORDER BY id")}
    except Exception:  # pylint: disable=broad-except
        log.exception("mailfleet_bans: SASL holds")
        return None  # absent: the hosts keep their last map rather than release everyone


# --- outbound mode (DNSBL) ----------------------------------------------------------------

def _outbound_module():
    """_runners/mailfleet_reroute.py (its pure ``outbound_pillar``), beside this file."""
    if "mailfleet_reroute" in sys.modules and hasattr(sys.modules["mailfleet_reroute"], "outbound_pillar"):
        return sys.modules["mailfleet_reroute"]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "_runners", "mailfleet_reroute.py")
    spec = importlib.util.spec_from_file_location("mailfleet_reroute_pure", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _outbound(minion_id, db, now):
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='outbound'").fetchone():
            return {"mode": "normal", "admit": []}
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM outbound")]
        mod = _outbound_module()
        conf = dict(mod.DEFAULTS)
        conf.update(__opts__.get("mailfleet_reroute") or {})  # noqa: F821
        return mod.outbound_pillar(minion_id, rows, now, conf)
    except Exception:  # pylint: disable=broad-except
        # never "normal" by accident: a host's last rendered mode stays until this is fixed
        log.exception("mailfleet_bans: outbound mode of %s", minion_id)
        return {"error": "outbound mode unavailable (see the master log)"}
