"""Desired rows, the diff against the database's rows, and its summary (pure Python)."""
import datetime

import pytest

import mailfleet_pillar as pillar_check
import mailfleet_vusers_diff as vdiff
import mailfleet_vusers_rows as vrows

SHA512 = "{SHA512-CRYPT}$6$saltsaltsalt$PMWE8DTlam1JU37Piyk43bHcMxTJq6sgu5DKB0/tGPjanN35jcY68QkpDfPFUGPWX5uCxIQkSPzMmqEiVNgts."
OTHER = "{SHA512-CRYPT}$6$othersalt$" + "b" * 86
NOW = datetime.datetime(2026, 3, 1, 12, 0, 0)
DAY = datetime.timedelta(days=1)


def cfg(**extra):
    c = {
        "postmaster": "hostmaster@example-a.test",
        "domains": {
            "example-a.test": {
                "hosts": ["mail01.lab.test"],
                "description": "A",
                "quota": "1G",
                "maxquota": "2G",
                "mailboxes": {"alice": {"name": "Alice", "password": SHA512},
                              "hostmaster": {"password": SHA512, "quota": "2G"}},
                "aliases": {"info": ["alice@example-a.test", "ext@elsewhere.test"], "@": ["alice@example-a.test"]},
                "alias_domains": ["alias-a.test"],
            },
        },
    }
    c.update(extra)
    return c


def desired_of(c, host=None):
    model, errors, _ = pillar_check.validate_pillar(c)
    assert errors == []
    return vrows.desired_rows(model, host)


def empty():
    return {t: {} for t in vrows.TABLES}


def as_current(desired):
    """The database after a perfect sync of ``desired``."""
    return {t: {k: (tuple(m), tuple(i)) for k, (m, i) in rows.items()} for t, rows in desired.items()}


def as_managed(desired, retention, deactivated=None):
    out = {}
    for t, rows in desired.items():
        for k, (m, _) in rows.items():
            dom = vdiff._row_domain(t, k, m)
            out[(t, k)] = (dom, deactivated, retention.get(dom))
    return out


def test_desired_rows_follow_postfixadmin_rules():
    desired, retention = desired_of(cfg())
    assert desired["domain"] == {"example-a.test": (("A", 2048, 1), (0, 0, 0, "virtual", 0))}
    assert desired["mailbox"]["alice@example-a.test"] == (
        (SHA512, "Alice", 1024**3, "alice", "example-a.test", 1), ("example-a.test/alice/",))
    assert desired["mailbox"]["hostmaster@example-a.test"][0][2] == 2 * 1024**3
    assert desired["alias"]["alice@example-a.test"] == (("alice@example-a.test", "example-a.test", 1), ())
    assert desired["alias"]["@example-a.test"][0][0] == "alice@example-a.test"
    assert desired["alias"]["info@example-a.test"][0][0] == "alice@example-a.test,ext@elsewhere.test"
    assert desired["alias"]["postmaster@example-a.test"][0][0] == "hostmaster@example-a.test"
    assert desired["alias"]["abuse@example-a.test"][0][0] == "hostmaster@example-a.test"
    assert desired["alias_domain"] == {"alias-a.test": (("example-a.test", 1), ())}
    assert retention == {"example-a.test": None, "alias-a.test": None}


def test_inactive_domain_and_mailbox():
    c = cfg()
    c["domains"]["example-a.test"]["active"] = False
    c["domains"]["example-a.test"]["mailboxes"]["alice"]["active"] = False
    desired, _ = desired_of(c)
    assert desired["domain"]["example-a.test"][0][-1] == 0
    assert desired["alias_domain"]["alias-a.test"][0][-1] == 0
    assert desired["mailbox"]["alice@example-a.test"][0][-1] == 0
    assert desired["alias"]["alice@example-a.test"][0][-1] == 0


def test_host_filter():
    c = cfg()
    c["domains"]["example-b.test"] = {"hosts": ["mail02.lab.test"], "mailboxes": {"bob": {"password": SHA512}}}
    c["domains"]["example-c.test"] = {"mailboxes": {"carl": {"password": SHA512}}}  # no hosts: everywhere
    desired, retention = desired_of(c, host="MAIL01.lab.test")
    assert set(desired["domain"]) == {"example-a.test", "example-c.test"}
    assert "example-b.test" in retention
    desired, _ = desired_of(c)  # no host: no filter
    assert len(desired["domain"]) == 3


def test_first_sync_inserts_everything():
    desired, retention = desired_of(cfg())
    d = vdiff.compute_diff(desired, empty(), {}, NOW, retention=retention)
    assert d.counts() == {"domain": {"insert": 1}, "mailbox": {"insert": 2}, "alias": {"insert": 6},
                          "alias_domain": {"insert": 1}}
    assert len(d.managed_upsert) == 10
    assert all(u[3] is None for u in d.managed_upsert)


def test_perfect_state_is_a_noop():
    desired, retention = desired_of(cfg())
    d = vdiff.compute_diff(desired, as_current(desired), as_managed(desired, retention), NOW, retention=retention)
    assert d.empty and d.counts() == {}
    assert vdiff.describe(d) == "no changes" and vdiff.summarize(d) == {}


def test_update_names_changed_columns_only():
    old, retention = desired_of(cfg())
    c = cfg()
    c["domains"]["example-a.test"]["mailboxes"]["alice"]["password"] = OTHER
    c["domains"]["example-a.test"]["mailboxes"]["alice"]["quota"] = "512M"
    new, _ = desired_of(c)
    d = vdiff.compute_diff(new, as_current(old), as_managed(old, retention), NOW, retention=retention)
    assert d.counts() == {"mailbox": {"update": 1}}
    assert [(k, c) for k, _, _, c in d.update["mailbox"]] == [("alice@example-a.test", ["password", "quota"])]
    s = vdiff.summarize(d)
    assert s == {"mailbox": {"update": {"count": 1, "first": ["alice@example-a.test (password, quota)"]}}}
    assert OTHER not in repr(s)


def test_database_spelling_differences_are_not_changes():
    desired, retention = desired_of(cfg())
    current = as_current(desired)
    m, i = current["alias"]["info@example-a.test"]
    current["alias"]["info@example-a.test"] = (("EXT@elsewhere.test, alice@example-a.test", "Example-A.test", 1), i)
    m, i = current["domain"]["example-a.test"]
    current["domain"]["example-a.test"] = (m, (5, 5, 100, "dovecot", 0))  # insert-only columns: theirs
    m, i = current["mailbox"]["alice@example-a.test"]
    current["mailbox"]["alice@example-a.test"] = (m, ("elsewhere/alice/",))  # maildir: never moved
    d = vdiff.compute_diff(desired, current, as_managed(desired, retention), NOW, retention=retention)
    assert d.empty


def test_reactivation():
    desired, retention = desired_of(cfg())
    current = as_current(desired)
    m, i = current["mailbox"]["alice@example-a.test"]
    current["mailbox"]["alice@example-a.test"] = (m[:-1] + (0,), i)
    managed = as_managed(desired, retention)
    managed[("mailbox", "alice@example-a.test")] = ("example-a.test", NOW - 5 * DAY, None)
    d = vdiff.compute_diff(desired, current, managed, NOW, retention=retention)
    assert [(k, c) for k, _, _, c in d.update["mailbox"]] == [("alice@example-a.test", ["active"])]
    assert d.managed_upsert == [("mailbox", "alice@example-a.test", "example-a.test", None, None)]


def test_removed_managed_rows_are_deactivated_not_purged():
    old, retention = desired_of(cfg())
    c = cfg()
    del c["domains"]["example-a.test"]["mailboxes"]["alice"]
    c["domains"]["example-a.test"]["aliases"] = {}
    c["domains"]["example-a.test"]["alias_domains"] = []
    new, _ = desired_of(c)
    d = vdiff.compute_diff(new, as_current(old), as_managed(old, retention), NOW, retention=retention)
    assert sorted(d.deactivate["alias"]) == ["@example-a.test", "alice@example-a.test", "info@example-a.test"]
    assert d.deactivate["mailbox"] == ["alice@example-a.test"]
    assert d.deactivate["alias_domain"] == ["alias-a.test"]
    assert not any(d.purge.values()) and not d.archive
    assert all(u[3] == NOW for u in d.managed_upsert)  # the retention clock starts


def _after_deactivation(days_ago, purge_after_days):
    """alice removed from the pillar and deactivated ``days_ago`` days ago."""
    c = cfg()
    a = c["domains"]["example-a.test"]
    if purge_after_days is not None:
        a["retention"] = {"purge_after_days": purge_after_days}
    a["aliases"]["info"] = ["hostmaster@example-a.test"]
    a["aliases"]["@"] = ["hostmaster@example-a.test"]
    old, retention = desired_of(c)
    del a["mailboxes"]["alice"]
    new, _ = desired_of(c)
    current = as_current(old)
    managed = as_managed(old, retention)
    for t, k in (("mailbox", "alice@example-a.test"), ("alias", "alice@example-a.test")):
        m, i = current[t][k]
        current[t][k] = (m[:-1] + (0,), i)
        managed[(t, k)] = ("example-a.test", NOW - days_ago * DAY, purge_after_days)
    return vdiff.compute_diff(new, current, managed, NOW, retention=retention)


def test_purge_only_after_retention():
    assert _after_deactivation(days_ago=400, purge_after_days=None).counts() == {}
    assert not any(_after_deactivation(days_ago=29, purge_after_days=30).purge.values())
    d = _after_deactivation(days_ago=30, purge_after_days=30)
    assert d.purge["mailbox"] == ["alice@example-a.test"] and d.purge["alias"] == ["alice@example-a.test"]
    assert d.archive == [("alice@example-a.test", "example-a.test/alice/", ".archive/example-a.test/alice-20260301T120000Z")]
    assert ("mailbox", "alice@example-a.test") in d.managed_delete


def test_purge_refuses_an_unsafe_maildir():
    d = _after_deactivation(days_ago=30, purge_after_days=1)
    assert d.purge["mailbox"]
    # same, with a maildir escaping the vmail base
    old, retention = desired_of(cfg())
    current = as_current(old)
    m, _ = current["mailbox"]["alice@example-a.test"]
    current["mailbox"]["alice@example-a.test"] = (m[:-1] + (0,), ("../../etc/",))
    managed = as_managed(old, retention)
    managed[("mailbox", "alice@example-a.test")] = ("example-a.test", NOW - 50 * DAY, 1)
    c = cfg()
    del c["domains"]["example-a.test"]["mailboxes"]["alice"]
    c["domains"]["example-a.test"]["aliases"] = {}
    new, _ = desired_of(c)
    d = vdiff.compute_diff(new, current, managed, NOW, retention={})
    assert d.purge["mailbox"] == [] and d.archive == []
    assert d.notes == ["mailbox alice@example-a.test: maildir '../../etc/' is not a plain relative path; not purged"]


def test_foreign_rows_left_alone_unless_exclusive():
    desired, retention = desired_of(cfg())
    current = as_current(desired)
    current["mailbox"]["eve@foreign.test"] = ((SHA512, "Eve", 0, "eve", "foreign.test", 1), ("foreign.test/eve/",))
    current["domain"]["foreign.test"] = (("", 0, 1), (0, 0, 0, "virtual", 0))
    current["domain"]["all"] = (("", 0, 1), (0, 0, 0, "", 0))
    managed = as_managed(desired, retention)
    assert vdiff.compute_diff(desired, current, managed, NOW, retention=retention).empty
    d = vdiff.compute_diff(desired, current, managed, NOW, exclusive=True, retention=retention)
    assert d.deactivate["mailbox"] == ["eve@foreign.test"]
    assert d.deactivate["domain"] == ["foreign.test"]  # never PostfixAdmin's ALL
    assert ("mailbox", "eve@foreign.test", "foreign.test", NOW, None) in d.managed_upsert


def test_existing_row_is_adopted():
    desired, retention = desired_of(cfg())
    current = as_current(desired)
    d = vdiff.compute_diff(desired, current, {}, NOW, retention=retention)
    assert d.counts() == {t: {"adopt": len(desired[t])} for t in vrows.TABLES}
    assert not any(d.insert.values()) and not any(d.update.values())


def test_managed_record_of_a_vanished_row_is_dropped():
    desired, retention = desired_of(cfg())
    managed = as_managed(desired, retention)
    managed[("mailbox", "gone@example-a.test")] = ("example-a.test", None, None)
    d = vdiff.compute_diff(desired, as_current(desired), managed, NOW, retention=retention)
    assert d.managed_delete == [("mailbox", "gone@example-a.test")]


def test_summary_stays_short_at_scale():
    c = cfg()
    mb = c["domains"]["example-a.test"]["mailboxes"]
    for i in range(25000):
        mb[f"user{i:05d}"] = {"password": SHA512}
    desired, retention = desired_of(c)
    d = vdiff.compute_diff(desired, empty(), {}, NOW, retention=retention)
    s = vdiff.summarize(d)
    assert s["mailbox"]["insert"]["count"] == 25002
    assert len(s["mailbox"]["insert"]["first"]) == 10
    assert len(repr(s)) < 3000
    assert len(vdiff.summarize(d, full=True)["mailbox"]["insert"]["items"]) == 25002
    assert vdiff.describe(d).startswith("50010 inserts (domain 1, mailbox 25002, alias 25006, alias_domain 1)")
