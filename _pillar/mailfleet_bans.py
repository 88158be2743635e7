"""
ext_pillar ``mailfleet_bans``: the ban ledger's bans in force, handed to every minion as
pillar ``mailfleet_bans`` = {"active": {address: expires epoch}, "revoked": [addresses],
"generated": epoch}, for the state ``mailfleet_ban.reconciled``.

Why pillar: it is rendered by the master for each state run (never stale), travels over the
minion's authenticated, encrypted channel, and needs no peer-publish rights (a minion asking
the master's runners itself would need ``peer_run``, which any minion could then use).
The ledger (see _utils/mailfleet_ban_ledger.py) is read-only here.

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
import logging
import time

# salt://_utils: Salt's pillar loader puts the utils directories on sys.path while it loads
import mailfleet_ledger
import mailfleet_report
import mailfleet_outbound_mode

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_bans"


def __virtual__():
    return __virtualname__


def ext_pillar(minion_id, pillar, *args, **kwargs):
    now = time.time()
    out = {"active": {}, "revoked": [], "generated": now}
    key = _report_key(minion_id)
    db = mailfleet_ledger.connect_ro(mailfleet_ledger.path(__opts__))
    if db is None:
        return {"mailfleet_bans": out, "mailfleet_outbound": {"mode": "normal", "admit": []},
                "mailfleet_sasl_holds": {}, "mailfleet_sasl_holds_seq": 0, "mailfleet_report_key": key}
    memory = ((__opts__.get("mailfleet_defense") or {}).get("revoked_memory") or 7 * 86400)
    try:
        # (the file may exist without the bans table: the DNSBL runner's tables came first)
        if mailfleet_ledger.has_table(db, "bans"):
            for addr, exp in db.execute("SELECT address, max(expires) FROM bans WHERE revoked IS NULL"
                                        " AND not_before<=? AND expires>? GROUP BY address", (now, now)):
                out["active"][addr] = exp
            revoked = {r[0] for r in db.execute("SELECT address FROM bans WHERE revoked>=?", (now - memory,))}
            out["revoked"] = sorted(revoked - set(out["active"]))
        outbound = _outbound(minion_id, db, now)
        # the sequence before the holds: a change between the two reads then leaves the host
        # a lower number than its map, so the push of that change still applies
        seq = _sasl_holds_seq(db)
        holds = _sasl_holds(db)
    finally:
        db.close()
    return {"mailfleet_bans": out, "mailfleet_outbound": outbound, "mailfleet_sasl_holds": holds,
            "mailfleet_sasl_holds_seq": seq, "mailfleet_report_key": key}


def _report_key(minion_id):
    """This minion's own report key (made on first use; None once isolated): its detector
    signs what it reports with it (_utils/mailfleet_report.py). No other host's."""
    try:
        d = mailfleet_report.key_dir(__opts__, mailfleet_ledger.path(__opts__))
        return mailfleet_report.KeyStore(d).ensure(minion_id)
    except (OSError, ValueError):
        log.exception("mailfleet_bans: report key of %s", minion_id)
        return None


# --- held SASL users (compromised accounts, _runners/mailfleet_accounts.py) -----------------

def _sasl_holds(db):
    """{user: hold|refuse} in force, the same on every host (an account is held fleet-wide)."""
    try:
        if not mailfleet_ledger.has_table(db, "sasl_holds"):
            return {}
        return {r[0]: r[1] for r in db.execute(
            "SELECT user, mode FROM sasl_holds WHERE released IS NULL ORDER BY id")}
    except Exception:  # noqa: BLE001
        log.exception("mailfleet_bans: SASL holds")
        return None  # absent: the hosts keep their last map rather than release everyone


def _sasl_holds_seq(db):
    """The hold map's sequence number (0: none yet; read in the same snapshot as the holds)."""
    try:
        if not mailfleet_ledger.has_table(db, "sasl_holds_seq"):
            return 0
        row = db.execute("SELECT seq FROM sasl_holds_seq WHERE id = 1").fetchone()
        return int(row[0]) if row else 0
    except Exception:  # noqa: BLE001
        log.exception("mailfleet_bans: SASL holds sequence")
        return None


# --- outbound mode (DNSBL) ----------------------------------------------------------------

def _outbound(minion_id, db, now):
    try:
        if not mailfleet_ledger.has_table(db, "outbound"):
            return {"mode": "normal", "admit": []}
        rows = [dict(r) for r in db.execute("SELECT * FROM outbound")]
        conf = dict(mailfleet_outbound_mode.DEFAULTS)
        conf.update(__opts__.get("mailfleet_reroute") or {})
        return mailfleet_outbound_mode.outbound_pillar(minion_id, rows, now, conf)
    except Exception:  # noqa: BLE001
        # never "normal" by accident: a host's last rendered mode stays until this is fixed
        log.exception("mailfleet_bans: outbound mode of %s", minion_id)
        return {"error": "outbound mode unavailable (see the master log)"}
