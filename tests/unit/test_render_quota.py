"""
Quota at SMTP time, as rendered: Dovecot's quota plugin with the per-mailbox limit from the
database, its quota-status policy service on a socket in Postfix's spool, and Postfix asking
it in smtpd_recipient_restrictions while smtpd_relay_restrictions still refuse relaying.

Rendered through Salt's loader for the whole formula (Debian, Dovecot 2.3 = the lab; 2.4 =
render-only) and for the 2.4 template alone. The lab test (tests/lab/test_21_*) runs it.
"""
import pytest

from salt_render import DEBIAN_GRAINS, SaltRender
import mailfleet_settings_check as mailfleet_config
from test_render_dovecot24 import SAMPLE, settings


def _pillar(major, **quota):
    mf = {"lookup": {"dovecot_major": major},
          "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw", "sync_password": "sy-pw"}}
    if quota:
        mf["quota"] = quota
    return {"mailfleet": mf}


def _files(tmp, major, **quota):
    r = SaltRender(tmp, DEBIAN_GRAINS, pillar=_pillar(major, **quota))
    high = r.show_sls("mail")
    return r.render_all(high)


@pytest.fixture(scope="module")
def deb23(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("q23"), "2.3")


@pytest.fixture(scope="module")
def deb24(tmp_path_factory):
    return _files(tmp_path_factory.mktemp("q24"), "2.4")


def _main_cf(text):
    return dict(line.split(" = ", 1) for line in text.splitlines()
                if " = " in line and not line.startswith("#"))


@pytest.mark.parametrize("fixture", ["deb23", "deb24"])
def test_postfix_asks_quota_status_after_the_relay_check(fixture, request):
    main = _main_cf(request.getfixturevalue(fixture)["/etc/postfix/main.cf"])
    assert main["smtpd_recipient_restrictions"] == \
        "check_policy_service { unix:private/quota-status, default_action=DUNNO }"
    # Relay protection is untouched: smtpd_relay_restrictions run before the recipient ones.
    assert main["smtpd_relay_restrictions"].endswith("reject_unauth_destination")
    assert "permit" not in main["smtpd_recipient_restrictions"]


def test_dovecot23_quota_plugin_and_status_service(deb23):
    conf = deb23["/etc/dovecot/dovecot.conf"]
    s = settings(conf)
    assert ("", "mail_plugins", "$mail_plugins quota") in s
    assert ("protocol imap", "mail_plugins", "$mail_plugins imap_quota") in s
    assert ("plugin", "quota", "count:User quota") in s
    assert ("plugin", "quota_vsizes", "yes") in s
    # DUNNO, never quota-status' defaults OK (skips later restrictions) / REJECT (aliases).
    assert ("plugin", "quota_status_success", "DUNNO") in s
    assert ("plugin", "quota_status_nouser", "DUNNO") in s
    assert ("plugin", "quota_status_overquota", "552 5.2.2 Mailbox is full") in s
    assert ("service quota-status", "executable", "quota-status -p postfix") in s
    listener = "service quota-status/unix_listener /var/spool/postfix/private/quota-status"
    assert (listener, "user", "postfix") in s and (listener, "mode", "0600") in s
    assert ("", "lmtp_rcpt_check_quota", "yes") in s and ("", "quota_full_tempfail", "yes") in s


def test_dovecot23_userdb_returns_the_mailbox_quota(deb23):
    sql = deb23["/etc/dovecot/dovecot-sql.conf.ext"]
    user_query = [line for line in sql.splitlines() if line.startswith("user_query")][0]
    assert "CONCAT('*:bytes=', quota) AS quota_rule" in user_query


def test_dovecot24_quota_plugin_and_status_service(deb24):
    s = settings(deb24["/etc/dovecot/dovecot.conf"])
    assert ("mail_plugins", "quota", "yes") in s
    assert ("protocol imap/mail_plugins", "imap_quota", "yes") in s
    assert ('quota "User quota"', "quota_driver", "count") in s
    assert ("", "quota_status_success", "DUNNO") in s
    assert ("", "quota_status_nouser", "DUNNO") in s
    assert ("", "quota_status_overquota", '"552 5.2.2 Mailbox is full"') in s
    assert ("service quota-status", "executable", "quota-status -p postfix") in s
    query = [v for p, k, v in s if p == "userdb sql" and k == "query"][0]
    assert "quota AS quota_storage_size" in query
    # 2.3-only quota syntax stays out of 2.4
    assert not [k for p, k, _ in s if k in ("quota_rule", "quota_vsizes", "quota")
                and p != "mail_plugins"]


def test_overquota_reply_from_pillar(tmp_path):
    files = _files(tmp_path, "2.3", overquota_reply="452 4.2.2 Mailbox full, try later")
    assert ("plugin", "quota_status_overquota", "452 4.2.2 Mailbox full, try later") in \
        settings(files["/etc/dovecot/dovecot.conf"])


def test_24_template_alone_quotes_the_reply(tmp_path):
    r = SaltRender(tmp_path, DEBIAN_GRAINS, pillar=_pillar("2.3"))
    text = r.render_source("salt://mail/files/dovecot-2.4.conf.jinja",
                           {"mf": dict(SAMPLE, quota={"overquota_reply": "452 4.2.2 Later"})})
    assert 'quota_status_overquota = "452 4.2.2 Later"' in text


@pytest.mark.parametrize("reply", ["552 5.2.2 Mailbox is full", "452 4.2.2 Over quota (try later)"])
def test_valid_replies(reply):
    assert not [p for p in mailfleet_config.problems({"quota": {"overquota_reply": reply}})
                if p.startswith("mailfleet:quota")]


@pytest.mark.parametrize("reply", ["250 2.0.0 ok", "552 4.2.2 mismatch", "552 Mailbox full",
                                   "552 5.2.2 full # comment", '452 4.2.2 "quoted"', "OK",
                                   "552 5.2.2 %{error}"])
def test_bad_replies_name_the_key(reply):
    problems = [p for p in mailfleet_config.problems({"quota": {"overquota_reply": reply}})
                if p.startswith("mailfleet:quota")]
    assert len(problems) == 1 and problems[0].startswith("mailfleet:quota:overquota_reply: ")
