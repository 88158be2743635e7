"""The virtual-user sync against a real MariaDB holding PostfixAdmin 3.3.13's schema."""
import copy
import datetime
import os

import pymysql
import pytest

import mailfleet_vusers_db as vdb
import mailfleet_vusers_rows as rows
import mailfleet_vusers_sync as vsync
from vusers_testdata import ARGON, SHA512

SCHEMA = __import__("pathlib").Path(__file__).resolve().parents[2] / "salt/mail/files/postfixadmin-3.3.13.sql"
VUSER_TABLES = ("domain", "mailbox", "alias", "alias_domain")


def run(cfg, **kw):
    kw.setdefault("host", "mail01.lab.test")
    return vsync.run_sync(cfg, **kw)


def ok(ret):
    assert ret["result"] is True, ret["comment"]
    return ret


def active(db, table, key_col, key):
    row = db.row(table, key_col, key)
    return None if row is None else row["active"]


def backdate(db, days, table=None):
    """Pretend mailfleet deactivated rows ``days`` ago (the retention clock)."""
    where = "WHERE deactivated IS NOT NULL" + (" AND tbl = %s" if table else "")
    db.execute(f"UPDATE mailfleet_managed SET deactivated = NOW() - INTERVAL {int(days)} DAY {where}",
               (table,) if table else None)


# ----------------------------------------------------------------------------- schema


def test_schema_is_postfixadmin_3_3_13_and_loads_idempotently(db, mariadb):
    before = db.query("SELECT table_name, table_collation FROM information_schema.tables "
                      "WHERE table_schema = %s ORDER BY table_name", (db.name,))
    mariadb.load_schema(db.name)  # a second load changes nothing
    after = db.query("SELECT table_name, table_collation FROM information_schema.tables "
                     "WHERE table_schema = %s ORDER BY table_name", (db.name,))
    assert before == after
    names = {r["table_name"] for r in after}
    assert {"domain", "mailbox", "alias", "alias_domain", "admin", "config", "vacation"} <= names
    assert db.query("SELECT name, value FROM config") == [{"name": "version", "value": "1847"}]
    engines = {r["engine"] for r in db.query(
        "SELECT engine FROM information_schema.tables WHERE table_schema = %s", (db.name,))}
    assert engines == {"InnoDB"}  # the sync's transaction needs it
    assert "AUTO_INCREMENT=" not in SCHEMA.read_text()


# ----------------------------------------------------------------------------- create


def test_first_sync_creates_postfixadmin_rows(db, pillar):
    ret = ok(run(pillar))
    assert ret["changed"]
    assert ret["counts"]["mailbox"] == {"insert": 4}

    dom = db.row("domain", "domain", "example-a.test")
    assert dom["description"] == "Example A"
    assert dom["maxquota"] == 20 * 1024  # MiB
    assert (dom["active"], dom["backupmx"], dom["transport"], dom["quota"]) == (1, 0, "virtual", 0)
    assert dom["created"] == dom["modified"] and dom["created"].year > 2000

    alice = db.row("mailbox", "username", "alice@example-a.test")
    assert alice["password"] == ARGON
    assert alice["name"] == "Alice Example"
    assert alice["maildir"] == "example-a.test/alice/"
    assert alice["quota"] == 1024**3
    assert (alice["local_part"], alice["domain"], alice["active"]) == ("alice", "example-a.test", 1)
    bob = db.row("mailbox", "username", "bob@example-a.test")
    assert bob["quota"] == 10 * 1024**3  # the domain default

    # every mailbox has its alias row address = goto = itself
    for user in ("alice@example-a.test", "bob@example-a.test", "hostmaster@example-a.test",
                 "carol@xn--bcher-kva.test"):
        assert db.row("alias", "address", user)["goto"] == user
    assert db.row("alias", "address", "info@example-a.test")["goto"] == "alice@example-a.test,bob@example-a.test"
    assert db.row("alias", "address", "@example-a.test")["goto"] == "alice@example-a.test"
    # postmaster@ and abuse@ of every domain -> mailfleet:postmaster
    for dom_name in ("example-a.test", "xn--bcher-kva.test"):
        for local in ("postmaster", "abuse"):
            row = db.row("alias", "address", f"{local}@{dom_name}")
            assert row["goto"] == "hostmaster@example-a.test" and row["domain"] == dom_name
    ad = db.row("alias_domain", "alias_domain", "alias-a.test")
    assert (ad["target_domain"], ad["active"]) == ("example-a.test", 1)

    # IDNA: stored as punycode; utf8mb4 name kept
    assert db.row("domain", "domain", "xn--bcher-kva.test")["description"] == "Bücher"
    assert db.row("mailbox", "username", "carol@xn--bcher-kva.test")["name"] == "Carol Ünïcødé 🙂"
    assert db.row("alias", "address", "sales@xn--bcher-kva.test")["goto"] == "carol@xn--bcher-kva.test,partner@external.test"

    managed = {(r["tbl"], r["item"]) for r in db.query("SELECT tbl, item FROM mailfleet_managed")}
    assert ("mailbox", "alice@example-a.test") in managed
    assert ("alias", "postmaster@xn--bcher-kva.test") in managed
    assert len(managed) == sum(db.query(f"SELECT COUNT(*) AS n FROM `{t}`")[0]["n"] for t in VUSER_TABLES)
    # the external target is a warning, not an error
    assert any("partner@external.test is external" in w for w in ret["warnings"])


def test_second_sync_is_a_noop(db, pillar):
    ok(run(pillar))
    before = db.checksum()
    ret = ok(run(pillar))
    assert ret["changed"] is False and ret["changes"] == {}
    assert "no changes" in ret["comment"]
    assert db.checksum() == before


# ----------------------------------------------------------------------------- update


def test_update_changes_only_what_changed(db, pillar):
    ok(run(pillar))
    alice0 = db.row("mailbox", "username", "alice@example-a.test")
    bob0 = db.row("mailbox", "username", "bob@example-a.test")
    db.execute("UPDATE mailbox SET modified = '2020-01-01 00:00:00'")

    new = copy.deepcopy(pillar)
    a = new["domains"]["example-a.test"]
    a["mailboxes"]["alice"].update(password=SHA512, quota="2G", name="Alice B.")
    a["aliases"]["info"] = ["bob@example-a.test"]
    a["description"] = "Example A, renamed"
    ret = ok(run(new))
    assert ret["counts"]["mailbox"] == {"update": 1}
    assert ret["counts"]["alias"] == {"update": 1}
    assert ret["counts"]["domain"] == {"update": 1}
    assert ret["changes"]["mailbox"]["update"]["first"] == ["alice@example-a.test (password, name, quota)"]
    assert SHA512 not in str(ret)  # no secret in the output

    alice = db.row("mailbox", "username", "alice@example-a.test")
    assert (alice["password"], alice["quota"], alice["name"]) == (SHA512, 2 * 1024**3, "Alice B.")
    assert alice["created"] == alice0["created"]
    assert alice["modified"] > datetime.datetime(2020, 1, 2)
    bob = db.row("mailbox", "username", "bob@example-a.test")
    assert bob["modified"] == datetime.datetime(2020, 1, 1)  # untouched
    assert bob["password"] == bob0["password"]
    assert db.row("alias", "address", "info@example-a.test")["goto"] == "bob@example-a.test"
    assert db.row("domain", "domain", "example-a.test")["description"] == "Example A, renamed"


def test_goto_order_and_case_are_not_changes(db, pillar):
    ok(run(pillar))
    db.execute("UPDATE alias SET goto = 'BOB@example-a.test, alice@example-a.test' WHERE address = 'info@example-a.test'")
    ret = ok(run(pillar))
    assert "alias" not in ret["counts"]


# ------------------------------------------------------------------------- deactivate


def test_removed_items_are_deactivated_not_deleted(db, pillar, tmp_path):
    ok(run(pillar))
    maildir = tmp_path / "vmail" / "example-a.test" / "bob" / "cur"
    maildir.mkdir(parents=True)
    (maildir / "1.msg").write_text("hello")

    new = copy.deepcopy(pillar)
    a = new["domains"]["example-a.test"]
    del a["mailboxes"]["bob"]
    a["aliases"]["info"] = ["alice@example-a.test"]
    del a["aliases"]["@"]
    a["alias_domains"] = []
    del new["domains"]["bücher.test"]
    ret = ok(run(new, vmail_dir=str(tmp_path / "vmail")))

    assert ret["counts"]["mailbox"] == {"deactivate": 2}
    assert active(db, "mailbox", "username", "bob@example-a.test") == 0
    assert active(db, "alias", "address", "bob@example-a.test") == 0
    assert active(db, "alias", "address", "@example-a.test") == 0
    assert active(db, "alias_domain", "alias_domain", "alias-a.test") == 0
    assert active(db, "domain", "domain", "xn--bcher-kva.test") == 0
    assert active(db, "mailbox", "username", "carol@xn--bcher-kva.test") == 0
    assert active(db, "alias", "address", "postmaster@xn--bcher-kva.test") == 0
    assert active(db, "mailbox", "username", "alice@example-a.test") == 1
    assert (maildir / "1.msg").read_text() == "hello"  # maildir kept
    deactivated = db.query("SELECT deactivated FROM mailfleet_managed WHERE tbl='mailbox' AND item='bob@example-a.test'")
    assert deactivated[0]["deactivated"] is not None

    # and it stays that way (idempotent), even long after: no retention, no purge
    backdate(db, 3650)
    before = db.checksum()
    ret = ok(run(new, vmail_dir=str(tmp_path / "vmail")))
    assert not ret["changed"]
    assert db.checksum() == before

    # back in the pillar: active again
    ret = ok(run(pillar))
    assert active(db, "mailbox", "username", "bob@example-a.test") == 1
    assert active(db, "domain", "domain", "xn--bcher-kva.test") == 1
    assert db.query("SELECT COUNT(*) AS n FROM mailfleet_managed WHERE deactivated IS NOT NULL")[0]["n"] == 0


# ------------------------------------------------------------------------------ purge


def test_purge_after_retention_archives_the_maildir(db, pillar, tmp_path):
    vmail = tmp_path / "vmail"
    pillar["domains"]["example-a.test"]["retention"] = {"purge_after_days": 30}
    ok(run(pillar, vmail_dir=str(vmail)))
    (vmail / "example-a.test" / "bob" / "new").mkdir(parents=True)
    (vmail / "example-a.test" / "bob" / "new" / "1.msg").write_text("keep me")

    new = copy.deepcopy(pillar)
    del new["domains"]["example-a.test"]["mailboxes"]["bob"]
    new["domains"]["example-a.test"]["aliases"]["info"] = ["alice@example-a.test"]
    ok(run(new, vmail_dir=str(vmail)))
    assert active(db, "mailbox", "username", "bob@example-a.test") == 0

    backdate(db, 29)  # not yet
    ret = ok(run(new, vmail_dir=str(vmail)))
    assert not ret["changed"]
    assert db.row("mailbox", "username", "bob@example-a.test") is not None

    backdate(db, 31)
    ret = ok(run(new, vmail_dir=str(vmail), test=True))  # test mode: the plan, nothing moved
    assert ret["counts"]["mailbox"] == {"purge": 1}
    assert ret["counts"]["maildir"] == {"archive": 1}
    assert (vmail / "example-a.test" / "bob").is_dir()

    ret = ok(run(new, vmail_dir=str(vmail)))
    assert ret["counts"]["mailbox"] == {"purge": 1}
    assert ret["counts"]["alias"] == {"purge": 1}
    assert db.row("mailbox", "username", "bob@example-a.test") is None
    assert db.row("alias", "address", "bob@example-a.test") is None
    assert not db.query("SELECT * FROM mailfleet_managed WHERE item = 'bob@example-a.test'")
    assert not (vmail / "example-a.test" / "bob").exists()
    archived = list((vmail / ".archive" / "example-a.test").iterdir())
    assert len(archived) == 1 and archived[0].name.startswith("bob-")
    assert (archived[0] / "new" / "1.msg").read_text() == "keep me"
    assert db.row("mailbox", "username", "alice@example-a.test")["active"] == 1

    before = db.checksum()
    assert not ok(run(new, vmail_dir=str(vmail)))["changed"]
    assert db.checksum() == before


def test_removed_domain_is_purged_with_its_rows_after_retention(db, pillar, tmp_path):
    pillar["domains"]["bücher.test"]["retention"] = {"purge_after_days": 7}
    ok(run(pillar, vmail_dir=str(tmp_path)))
    new = copy.deepcopy(pillar)
    del new["domains"]["bücher.test"]  # its retention goes with it: remembered in the DB
    ok(run(new, vmail_dir=str(tmp_path)))
    assert active(db, "domain", "domain", "xn--bcher-kva.test") == 0
    backdate(db, 8)
    ret = ok(run(new, vmail_dir=str(tmp_path)))
    assert ret["counts"]["domain"] == {"purge": 1}
    for table, col in (("domain", "domain"), ("mailbox", "domain"), ("alias", "domain")):
        assert not db.query(f"SELECT 1 FROM `{table}` WHERE `{col}` = 'xn--bcher-kva.test'")
    assert db.row("domain", "domain", "example-a.test")["active"] == 1


def test_domain_with_foreign_rows_is_not_purged(db, pillar, tmp_path):
    pillar["domains"]["bücher.test"]["retention"] = {"purge_after_days": 0}
    ok(run(pillar))
    db.execute("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, created, modified, active) "
               "VALUES ('dave@xn--bcher-kva.test', %s, 'Dave', 'xn--bcher-kva.test/dave/', 0, 'dave', 'xn--bcher-kva.test', NOW(), NOW(), 1)",
               (SHA512,))
    new = copy.deepcopy(pillar)
    del new["domains"]["bücher.test"]
    ok(run(new, vmail_dir=str(tmp_path)))
    ret = ok(run(new, vmail_dir=str(tmp_path)))
    assert ret["counts"]["mailbox"] == {"purge": 1}  # carol: ours
    assert "domain" not in ret["counts"]
    assert any("xn--bcher-kva.test: rows still refer to it" in n for n in ret["changes"]["notes"])
    assert db.row("domain", "domain", "xn--bcher-kva.test")["active"] == 0
    assert db.row("mailbox", "username", "dave@xn--bcher-kva.test")["active"] == 1


# -------------------------------------------------------------------------- test mode


def test_test_mode_reports_the_exact_diff_and_writes_nothing(db, pillar):
    before = db.checksum()
    ret = ok(run(pillar, test=True))
    assert ret["test"] and ret["changed"]
    assert ret["counts"]["mailbox"] == {"insert": 4}
    assert "test mode, nothing written" in ret["comment"]
    assert db.checksum() == before
    assert "mailfleet_managed" not in db.tables()  # not even the ownership table

    ok(run(pillar))
    new = copy.deepcopy(pillar)
    new["domains"]["example-a.test"]["mailboxes"]["bob"]["quota"] = "3G"
    del new["domains"]["example-a.test"]["aliases"]["info"]
    before = db.checksum()
    ret = ok(run(new, test=True))
    assert ret["counts"] == {"mailbox": {"update": 1}, "alias": {"deactivate": 1}}
    assert ret["changes"]["mailbox"]["update"]["first"] == ["bob@example-a.test (quota)"]
    assert ret["changes"]["alias"]["deactivate"]["first"] == ["info@example-a.test"]
    assert db.checksum() == before
    # what test mode announced is what the real run does
    assert ok(run(new))["counts"] == ret["counts"]


# ------------------------------------------------------------------------- validation

PLAINTEXT = ("mailfleet:domains:example-a.test:mailboxes:alice:password: plaintext password refused; "
             "use a {SCHEME} hash (ARGON2ID, SHA512-CRYPT, BLF-CRYPT)")


def _break(pillar, case):
    a = pillar["domains"]["example-a.test"]
    if case == "plaintext":
        a["mailboxes"]["alice"]["password"] = "hunter2"
        return PLAINTEXT
    if case == "idna":
        pillar["domains"]["bad_domain.test"] = {}
        return "mailfleet:domains:bad_domain.test: invalid domain name"
    if case == "local":
        a["mailboxes"]["al ice"] = {"password": SHA512}
        return "mailfleet:domains:example-a.test:mailboxes:al ice: invalid local part"
    if case == "outside":
        a["aliases"]["x@elsewhere.test"] = ["alice@example-a.test"]
        return "mailfleet:domains:example-a.test:aliases:x@elsewhere.test: address x@elsewhere.test is not inside domain example-a.test"
    if case == "alias-is-mailbox":
        a["aliases"]["bob"] = ["alice@example-a.test"]
        return "mailfleet:domains:example-a.test:aliases:bob: alias bob@example-a.test is also a mailbox"
    if case == "alias-domain-is-domain":
        a["alias_domains"] = ["alias-a.test", "bücher.test"]
        return "mailfleet:domains:example-a.test:alias_domains[1]: alias domain xn--bcher-kva.test is also a real domain"
    if case == "loop":
        a["aliases"]["l1"] = ["l2@example-a.test"]
        a["aliases"]["l2"] = ["l1@alias-a.test"]
        return "alias loop: l1@example-a.test -> l2@example-a.test -> l1@example-a.test"
    if case == "missing-target":
        a["aliases"]["info"] = ["nobody@xn--bcher-kva.test"]
        return "mailfleet:domains:example-a.test:aliases:info[0]: target nobody@xn--bcher-kva.test does not exist"
    if case == "quota":
        a["mailboxes"]["bob"]["quota"] = "5X"
        return "mailfleet:domains:example-a.test:mailboxes:bob:quota: invalid quota '5X'"
    raise AssertionError(case)


CASES = ["plaintext", "idna", "local", "outside", "alias-is-mailbox", "alias-domain-is-domain",
         "loop", "missing-target", "quota"]


@pytest.mark.parametrize("case", CASES)
def test_invalid_pillar_names_the_path_and_writes_nothing(db, pillar, case):
    ok(run(pillar))
    new = copy.deepcopy(pillar)
    new["domains"]["example-a.test"]["mailboxes"]["alice"]["quota"] = "2G"  # a valid change too
    expected = _break(new, case)
    before = db.checksum()
    ret = run(new)
    assert ret["result"] is False
    assert any(e.startswith(expected) or expected in e for e in ret["errors"]), ret["errors"]
    assert "nothing written" in ret["comment"]
    assert db.checksum() == before


def test_all_errors_are_reported_together(db, pillar):
    ok(run(pillar))
    before = db.checksum()
    # (alias-domain-is-domain left out: it would make bücher.test an alias of example-a.test,
    # where the catch-all receives the missing target)
    expected = [_break(pillar, case) for case in CASES if case != "alias-domain-is-domain"]
    ret = run(pillar)
    assert ret["result"] is False
    for exp in expected:
        assert any(exp in e for e in ret["errors"]), (exp, ret["errors"])
    assert PLAINTEXT in ret["errors"]
    assert db.checksum() == before


# -------------------------------------------------------------------- fault injection


def test_connection_killed_mid_sync_leaves_the_previous_state(db, pillar, mariadb):
    ok(run(pillar))
    new = copy.deepcopy(pillar)
    a = new["domains"]["example-a.test"]
    for i in range(40):
        a["mailboxes"][f"user{i}"] = {"password": SHA512}
    a["mailboxes"]["alice"]["quota"] = "3G"
    del new["domains"]["bücher.test"]
    before = db.checksum()
    killed = []

    def kill_after_first_batch(conn, table, op, rows):
        if not killed:
            killer = mariadb.root()
            with killer.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s",
                            (conn.thread_id(),))
                assert cur.fetchone()[0] == 1  # the sync holds an open transaction with writes
                cur.execute(f"KILL {int(conn.thread_id())}")
            killer.close()
            killed.append((table, op, rows))

    ret = run(new, batch_size=5, batch_callback=kill_after_first_batch)
    assert killed, "the sync never ran a batch"
    assert ret["result"] is False
    assert ret["errors"][0].startswith("database: ")
    assert "rolled back" in ret["comment"]
    assert db.checksum() == before
    assert db.row("mailbox", "username", "user0@example-a.test") is None

    # and the next sync goes through
    ret = ok(run(new))
    assert ret["counts"]["mailbox"]["insert"] == 40


def test_database_unreachable_is_an_error(db, pillar):
    pillar["db"] = dict(pillar["db"], socket="/nonexistent/mysqld.sock")
    ret = run(pillar)
    assert ret["result"] is False and ret["errors"][0].startswith("database: ")


# -------------------------------------------------------------------------- ownership


def _foreign_rows(db):
    db.execute("INSERT INTO domain (domain, description, transport, created, modified) "
               "VALUES ('foreign.test', 'made in PostfixAdmin', 'virtual', NOW(), NOW())")
    db.execute("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, created, modified) "
               "VALUES ('eve@foreign.test', %s, 'Eve', 'foreign.test/eve/', 0, 'eve', 'foreign.test', NOW(), NOW())",
               (SHA512,))
    db.execute("INSERT INTO alias (address, goto, domain, created, modified) VALUES "
               "('eve@foreign.test', 'eve@foreign.test', 'foreign.test', NOW(), NOW()), "
               "('legacy@example-a.test', 'alice@example-a.test', 'example-a.test', NOW(), NOW())")
    db.execute("INSERT INTO domain (domain, description, transport, created, modified) "
               "VALUES ('ALL', '', '', NOW(), NOW())")


def test_rows_created_outside_mailfleet_survive(db, pillar):
    _foreign_rows(db)
    ok(run(pillar))
    new = copy.deepcopy(pillar)
    del new["domains"]["bücher.test"]
    ok(run(new))
    for table, col, key in (("domain", "domain", "foreign.test"), ("mailbox", "username", "eve@foreign.test"),
                            ("alias", "address", "eve@foreign.test"), ("alias", "address", "legacy@example-a.test"),
                            ("domain", "domain", "ALL")):
        assert active(db, table, col, key) == 1, key
    assert not db.query("SELECT * FROM mailfleet_managed WHERE item IN ('foreign.test', 'eve@foreign.test', 'legacy@example-a.test')")
    assert not ok(run(new))["changed"]


def test_exclusive_deactivates_foreign_rows(db, pillar):
    _foreign_rows(db)
    pillar["exclusive"] = True
    ret = ok(run(pillar))
    assert active(db, "domain", "domain", "foreign.test") == 0
    assert active(db, "mailbox", "username", "eve@foreign.test") == 0
    assert active(db, "alias", "address", "legacy@example-a.test") == 0
    assert active(db, "domain", "domain", "ALL") == 1  # PostfixAdmin's superadmin pseudo-domain
    assert ret["counts"]["domain"]["deactivate"] == 1
    assert active(db, "mailbox", "username", "alice@example-a.test") == 1
    assert not ok(run(pillar))["changed"]


def test_declared_row_that_exists_is_adopted(db, pillar):
    db.execute("INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, created, modified) "
               "VALUES ('alice@example-a.test', 'old', 'Old Alice', 'custom/alice-dir/', 5, 'alice', 'example-a.test', "
               "'2019-05-05 00:00:00', '2019-05-05 00:00:00')")
    ret = ok(run(pillar))
    assert ret["counts"]["mailbox"] == {"insert": 3, "update": 1, "adopt": 1}
    alice = db.row("mailbox", "username", "alice@example-a.test")
    assert alice["password"] == ARGON and alice["quota"] == 1024**3
    assert alice["maildir"] == "custom/alice-dir/"  # never moved under a user's feet
    assert alice["created"] == datetime.datetime(2019, 5, 5)
    assert db.query("SELECT 1 FROM mailfleet_managed WHERE tbl='mailbox' AND item='alice@example-a.test'")


def test_sync_user_needs_no_more_than_its_grants(db, pillar):
    # the ownership table is created by the sync account itself (CREATE on the database)
    assert "mailfleet_managed" not in db.tables()
    ok(run(pillar))
    assert "mailfleet_managed" in db.tables()
    pa_tables = {t for t in db.tables() if t != "mailfleet_managed"}
    cols = db.query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND column_name LIKE 'mailfleet%%'", (db.name,))
    assert not [c for c in cols if c["table_name"] in pa_tables]  # PostfixAdmin's tables untouched


# ------------------------------------------------------------------------- reading


def test_packed_read_matches_a_plain_read(db, pillar):
    """read_state packs each row into one string; a value holding the separator is read
    again column by column, so nothing is misread."""
    _foreign_rows(db)
    db.execute("UPDATE mailbox SET name = 'Eve \x1f Unit-Separator' WHERE username = 'eve@foreign.test'")
    ok(run(pillar))
    conn = vdb.connect(dict(pillar["db"]))
    try:
        current, managed = vdb.read_state(conn)
        plain = {}
        with conn.cursor() as cur:
            for t in rows.TABLES:
                cols = (rows.KEY[t],) + rows.MANAGED_COLS[t] + rows.INSERT_COLS[t]
                cur.execute(f"SELECT {', '.join(cols)} FROM `{t}`")
                nm = 1 + len(rows.MANAGED_COLS[t])
                plain[t] = {r[0].lower(): (tuple(r[1:nm]), tuple(r[nm:])) for r in cur.fetchall()}
            cur.execute("SELECT tbl, item, domain, deactivated, purge_after_days FROM mailfleet_managed")
            plain_managed = {(r[0], r[1].lower()): (r[2], r[3], r[4]) for r in cur.fetchall()}
    finally:
        conn.close()
    assert current == plain
    assert managed == plain_managed
    assert current["mailbox"]["eve@foreign.test"][0][1] == "Eve \x1f Unit-Separator"


def test_ownership_records_of_rows_deleted_outside_are_dropped(db, pillar):
    ok(run(pillar))
    db.execute("DELETE FROM alias WHERE address = 'info@example-a.test'")
    new = copy.deepcopy(pillar)
    del new["domains"]["example-a.test"]["aliases"]["info"]
    ret = ok(run(new))
    assert not db.query("SELECT 1 FROM mailfleet_managed WHERE item = 'info@example-a.test'")
    assert ok(run(new))["changed"] is False
    # deleted outside but still declared: created again
    db.execute("DELETE FROM mailbox WHERE username = 'bob@example-a.test'")
    ret = ok(run(new))
    assert ret["counts"]["mailbox"] == {"insert": 1}
