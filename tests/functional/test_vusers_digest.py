"""Partition digests: a no-op sync reads no rows; any difference in a compared column,
an extra row, a missing row or a changed ownership record makes its partition read."""
import copy

import mailfleet_pillar as pillar_check
import mailfleet_vusers_db as vdb
import mailfleet_vusers_rows as rows
import mailfleet_vusers_sync as vsync
from vusers_testdata import SHA512


def run(cfg, **kw):
    kw.setdefault("host", "mail01.lab.test")
    ret = vsync.run_sync(cfg, **kw)
    assert ret["result"] is True, ret["comment"]
    return ret


def test_digests_of_database_and_pillar_agree_after_a_sync(db, pillar):
    run(pillar)  # Unicode names and descriptions, punycode, catch-all, alias domain
    ret = run(pillar)
    assert ret["changed"] is False
    assert ret["partitions"]["read"] == 0
    assert ret["partitions"]["total"] == 3  # example-a.test, xn--bcher-kva.test, alias-a.test
    model, errors, _ = pillar_check.validate_pillar(pillar)
    assert not errors
    desired, retention = rows.desired_rows(model, "mail01.lab.test")
    conn = vdb.connect(dict(pillar["db"]))
    try:
        assert vdb.read_digests(conn) == vdb.desired_digests(desired, retention)
    finally:
        conn.close()


def _dirty_after(db, pillar, sql, args=None):
    run(pillar)
    db.execute(sql, args)
    ret = vsync.run_sync(pillar, host="mail01.lab.test", test=True)
    assert ret["result"] is True, ret["comment"]
    return ret


def test_a_change_outside_mailfleet_is_seen_in_every_compared_column(db, pillar):
    for sql in ("UPDATE mailbox SET password = %s WHERE username = 'alice@example-a.test'",
                "UPDATE mailbox SET name = 'Mallory' WHERE username = 'alice@example-a.test'",
                "UPDATE mailbox SET quota = quota + 1 WHERE username = 'alice@example-a.test'",
                "UPDATE mailbox SET active = 0 WHERE username = 'alice@example-a.test'",
                "UPDATE alias SET goto = 'mallory@evil.test' WHERE address = 'info@example-a.test'",
                "UPDATE domain SET description = 'x' WHERE domain = 'example-a.test'",
                "UPDATE domain SET maxquota = 1 WHERE domain = 'example-a.test'",
                "UPDATE alias_domain SET target_domain = 'xn--bcher-kva.test' WHERE alias_domain = 'alias-a.test'"):
        ret = _dirty_after(db, pillar, sql, (SHA512,) if "%s" in sql else None)
        assert ret["partitions"]["read"] == 1, sql
        assert ret["changed"] is True, sql
        run(pillar)  # repaired
        assert run(pillar)["partitions"]["read"] == 0


def test_rows_and_records_added_or_removed_outside_are_seen(db, pillar):
    # an unmanaged row in a declared domain: read (and left alone) every time
    ret = _dirty_after(db, pillar, "INSERT INTO alias (address, goto, domain, created, modified) VALUES "
                       "('legacy@example-a.test', 'alice@example-a.test', 'example-a.test', NOW(), NOW())")
    assert ret["partitions"]["read"] == 1 and ret["changed"] is False
    db.execute("DELETE FROM alias WHERE address = 'legacy@example-a.test'")
    # a declared row deleted outside: inserted again
    ret = _dirty_after(db, pillar, "DELETE FROM mailbox WHERE username = 'bob@example-a.test'")
    assert ret["partitions"]["read"] == 1 and ret["counts"]["mailbox"] == {"insert": 1}
    run(pillar)
    # an ownership record changed or removed
    ret = _dirty_after(db, pillar, "UPDATE mailfleet_managed SET purge_after_days = 3 WHERE item = 'bob@example-a.test'")
    assert ret["partitions"]["read"] == 1 and ret["changed"] is True
    run(pillar)
    ret = _dirty_after(db, pillar, "DELETE FROM mailfleet_managed WHERE item = 'alice@example-a.test' AND tbl = 'alias'")
    assert ret["partitions"]["read"] == 1 and ret["counts"]["alias"] == {"adopt": 1}
    run(pillar)
    # a managed row of a domain no longer in the pillar: its partition is read
    new = copy.deepcopy(pillar)
    del new["domains"]["bücher.test"]
    ret = run(new)
    assert ret["counts"]["mailbox"] == {"deactivate": 1}
    ret = run(new)
    assert ret["changed"] is False and ret["partitions"]["read"] == 1  # xn--bcher-kva.test: inactive rows


def test_only_the_changed_partition_is_read(db, pillar):
    run(pillar)
    new = copy.deepcopy(pillar)
    new["domains"]["example-a.test"]["mailboxes"]["bob"]["name"] = "Bob B."
    ret = run(new)
    assert ret["partitions"] == {"total": 3, "read": 1}
    assert ret["counts"] == {"mailbox": {"update": 1}}
    assert db.row("mailbox", "username", "bob@example-a.test")["name"] == "Bob B."
