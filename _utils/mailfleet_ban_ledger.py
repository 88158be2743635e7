"""
Every ban on the master, in the ledger (sqlite, WAL: concurrent reactor threads,
crash-safe): what the mailfleet_defense runner records and asks, and what the
mailfleet_bans ext_pillar hands to hosts. Imported plainly (Salt puts the utils directories
on ``sys.path``).
"""
import ipaddress
import json

import mailfleet_ledger
from mailfleet_ban_policy import DEFAULTS

__virtualname__ = "mailfleet_ban_ledger"


def __virtual__():
    return __virtualname__


class Ledger(mailfleet_ledger.Tables):
    """Every ban on the master, in sqlite (WAL: concurrent reactor threads, crash-safe)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS bans (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        address TEXT NOT NULL, family INTEGER NOT NULL, reporter TEXT NOT NULL,
        reason TEXT NOT NULL, created REAL NOT NULL, not_before REAL NOT NULL,
        timeout INTEGER NOT NULL, expires REAL NOT NULL, level INTEGER NOT NULL,
        applied REAL, revoked REAL, revoked_by TEXT);
    CREATE INDEX IF NOT EXISTS bans_address ON bans(address);
    CREATE INDEX IF NOT EXISTS bans_reporter ON bans(reporter, not_before);
    CREATE INDEX IF NOT EXISTS bans_pending ON bans(applied, not_before);
    """

    def is_banned(self, address, now):
        return self.db.execute(
            "SELECT 1 FROM bans WHERE address=? AND revoked IS NULL AND expires>? LIMIT 1",
            (address, now)).fetchone() is not None

    def prior_bans(self, address, since):
        return self.db.execute("SELECT count(*) FROM bans WHERE address=? AND created>=?",
                               (address, since)).fetchone()[0]

    def recent_not_before(self, reporter, since):
        return [r[0] for r in self.db.execute(
            # a ban dropped before its turn (forget_reporter) took no slot of the rate
            "SELECT not_before FROM bans WHERE reporter=? AND not_before>?"
            " AND NOT (revoked IS NOT NULL AND applied IS NULL) ORDER BY not_before",
            (reporter, since))]

    def insert(self, bans):
        for b in bans:
            self.db.execute(
                "INSERT INTO bans(address, family, reporter, reason, created, not_before, timeout,"
                " expires, level) VALUES (?,?,?,?,?,?,?,?,?)",
                (b["address"], ipaddress.ip_address(b["address"]).version, b["reporter"],
                 json.dumps(b["reason"], sort_keys=True), b["created"], b["not_before"],
                 b["timeout"], b["expires"], b["level"]))

    def due(self, now):
        """Bans whose turn has come and that were not sent yet: [(id, address, seconds left)]."""
        return [(r["id"], r["address"], int(r["expires"] - now)) for r in self.db.execute(
            "SELECT id, address, expires FROM bans WHERE applied IS NULL AND revoked IS NULL"
            " AND not_before<=? AND expires>? ORDER BY not_before, id", (now, now + 1))]

    def mark_applied(self, ids, now):
        self.db.executemany("UPDATE bans SET applied=? WHERE id=?", [(now, i) for i in ids])

    def queued_by(self, reporter, now):
        return self.db.execute("SELECT count(*) FROM bans WHERE reporter=? AND applied IS NULL AND revoked IS NULL"
                               " AND not_before>?", (reporter, now)).fetchone()[0]

    def prune(self, now, memory=DEFAULTS["ban_timeout"]["memory"]):
        """Delete rows expired (or revoked) longer than ``memory`` ago: past the escalation
        memory they decide nothing. Returns how many."""
        return self.db.execute("DELETE FROM bans WHERE max(expires, coalesce(revoked, 0)) < ?",
                               (now - memory,)).rowcount

    def queued(self, now):
        return self.db.execute("SELECT count(*) FROM bans WHERE applied IS NULL AND revoked IS NULL"
                               " AND not_before>?", (now,)).fetchone()[0]

    def revoke(self, address, now, who):
        cur = self.db.execute("UPDATE bans SET revoked=?, revoked_by=? WHERE address=? AND revoked IS NULL"
                              " AND expires>?", (now, who, address, now))
        return cur.rowcount

    def revoke_reporter(self, reporter, now, who, queued_only=True):
        """Revoke ``reporter``'s bans still waiting their turn (``queued_only=False``: and the
        ones in force). Returns {"queued": n, "in_force": [addresses]}."""
        cur = self.db.execute("UPDATE bans SET revoked=?, revoked_by=? WHERE reporter=? AND revoked IS NULL"
                              " AND applied IS NULL AND not_before>?", (now, who, reporter, now))
        out = {"queued": cur.rowcount, "in_force": []}
        if not queued_only:
            rows = self.db.execute("SELECT id, address FROM bans WHERE reporter=? AND revoked IS NULL"
                                   " AND expires>?", (reporter, now)).fetchall()
            self.db.executemany("UPDATE bans SET revoked=?, revoked_by=? WHERE id=?",
                                [(now, who, r["id"]) for r in rows])
            out["in_force"] = sorted({r["address"] for r in rows})
        return out

    def active(self, now):
        """{address: expires} of bans in force (their turn has come, not revoked)."""
        out = {}
        for r in self.db.execute("SELECT address, max(expires) AS e FROM bans WHERE revoked IS NULL"
                                 " AND not_before<=? AND expires>? GROUP BY address", (now, now)):
            out[r["address"]] = r["e"]
        return out

    def revoked_since(self, since, now):
        active = self.active(now)
        return sorted({r[0] for r in self.db.execute(
            "SELECT address FROM bans WHERE revoked>=?", (since,))} - set(active))

    def rows(self, now, include_all=False):
        where = "" if include_all else " WHERE revoked IS NULL AND expires>?"
        args = () if include_all else (now,)
        return [dict(r) for r in self.db.execute(f"SELECT * FROM bans{where} ORDER BY id", args)]
