"""
mail.webmail (Roundcube + PostfixAdmin): pillar checks that name the key, the admin SQL, and
the SLS rendered through Salt's loader (Debian = the lab, FreeBSD = rendered only, switch
off = only removals). The lab test (tests/lab/test_70_webmail.py) runs it in a browser.
"""
import copy

import pytest

import mailfleet_settings_check
from _modules import mailfleet_webmail
from salt_render import DEBIAN13_GRAINS, DEBIAN_GRAINS, FREEBSD_GRAINS, SaltRender

GOOD = {
    "webmail": {"enabled": True, "product_name": "Example Webmail",
                "des_key": "abcdefghijklmnopqrstuvwx", "db_password": "rc-pw"},
    "postfixadmin": {"enabled": True, "allow": ["192.0.2.0/24", "2001:db8::/32"], "db_password": "pfa-pw",
                     "setup_password": "$2y$10$" + "a" * 53,
                     "admins": {"admin@example.test": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$x$y"}},
}


def _with(path, value):
    cfg = copy.deepcopy(GOOD)
    section, key = path.split(":")
    if value is KeyError:
        del cfg[section][key]
    else:
        cfg[section][key] = value
    return mailfleet_settings_check.webmail_problems(cfg)


def test_good_settings_and_switches_off_have_no_problems():
    assert mailfleet_settings_check.webmail_problems(GOOD) == []
    assert mailfleet_settings_check.webmail_problems({}) == []
    # Off: nothing else is required (a host without webmail needs no secrets).
    assert mailfleet_settings_check.webmail_problems({"webmail": {"enabled": False}, "postfixadmin": {"enabled": False}}) == []


@pytest.mark.parametrize("path,value,expected", [
    ("webmail:des_key", KeyError, "mailfleet:webmail:des_key: required"),
    ("webmail:des_key", "too-short", "mailfleet:webmail:des_key: must be exactly 24"),
    ("webmail:des_key", "abcdefghijklmnopqrstuv'x", "mailfleet:webmail:des_key: must be exactly 24"),
    ("webmail:product_name", "", "mailfleet:webmail:product_name"),
    ("webmail:product_name", "Bob's mail", "mailfleet:webmail:product_name"),
    ("webmail:db_password", KeyError, "mailfleet:webmail:db_password: required"),
    ("webmail:enabled", "yes", "mailfleet:webmail:enabled: 'yes' is not true/false"),
    ("postfixadmin:allow", [], "mailfleet:postfixadmin:allow: a non-empty list"),
    ("postfixadmin:allow", ["10.0.0.0/33"], "mailfleet:postfixadmin:allow: '10.0.0.0/33' is not"),
    ("postfixadmin:setup_password", KeyError, "mailfleet:postfixadmin:setup_password: required"),
    ("postfixadmin:setup_password", "plain-text", "mailfleet:postfixadmin:setup_password: not a bcrypt"),
    ("postfixadmin:admins", {}, "mailfleet:postfixadmin:admins: at least one"),
    ("postfixadmin:admins", {"admin": "{ARGON2ID}$x"}, "mailfleet:postfixadmin:admins:admin: not an e-mail"),
    ("postfixadmin:admins", {"a@example.test": "secret"}, "mailfleet:postfixadmin:admins:a@example.test: not a {SCHEME}"),
    ("postfixadmin:db_password", "has space", "mailfleet:postfixadmin:db_password: use letters"),
])
def test_bad_settings_name_the_pillar_key(path, value, expected):
    found = _with(path, value)
    assert any(p.startswith(expected) for p in found), found


def test_admin_sql_makes_a_superadmin_and_escapes():
    sql = mailfleet_webmail.admin_sql("o'hara@example.test", "{X}a\\b")
    assert "'o\\'hara@example.test'" in sql and "'{X}a\\\\b'" in sql
    assert "superadmin = 1" in sql and "'ALL'" in sql
    assert "ON DUPLICATE KEY UPDATE" in sql   # idempotent; other admins are never touched
    assert "DELETE" not in sql.upper()


def _render(tmp, grains, **override):
    pillar = {"mailfleet": {"lookup": {"dovecot_major": "2.3"},
                            "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw",
                                   "sync_password": "sy-pw"}, **override}}
    r = SaltRender(tmp, grains, pillar=pillar)
    high = r.show_sls("mail.webmail")
    return r, high, {c[0]: c for c in r.chunks(high)}


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    return _render(tmp_path_factory.mktemp("webmail-debian"), DEBIAN_GRAINS)


def test_debian_render_one_pool_per_app_and_secrets_per_app_user(debian):
    r, high, chunks = debian
    files = r.render_all(high)
    rc_pool = files["/etc/php/8.2/fpm/pool.d/mailfleet-roundcube.conf"]
    pfa_pool = files["/etc/php/8.2/fpm/pool.d/mailfleet-postfixadmin.conf"]
    assert "user = mf-roundcube" in rc_pool and "user = mf-postfixadmin" in pfa_pool
    for pool in (rc_pool, pfa_pool):
        assert "php_admin_value[session.cookie_secure] = 1" in pool
        assert "php_admin_value[session.cookie_httponly] = 1" in pool
    for name, group in (("/etc/roundcube/config.inc.php", "mf-roundcube"),
                        ("/etc/postfixadmin/config.local.php", "mf-postfixadmin")):
        args = chunks[next(sid for sid, c in chunks.items() if c[3]["name"] == name and c[1] == "file")][3]
        assert (args["user"], args["group"], args["mode"]) == ("root", group, "0640")
    rc = files["/etc/roundcube/config.inc.php"]
    assert "'ssl://mail01.lab.test:993'" in rc and "'tls://mail01.lab.test:587'" in rc
    assert "$config['smtp_user'] = '%u';" in rc and "$config['smtp_pass'] = '%p';" in rc
    assert "$config['product_name'] = 'mailfleet lab webmail';" in rc  # lab pillar, mail01
    pfa_nginx = files["/etc/nginx/mailfleet-tls.d/postfixadmin.conf"]
    assert pfa_nginx.index("allow 198.18.0.1/32;") < pfa_nginx.index("deny all;")
    assert "(setup|upgrade)\\.php$ { return 403; }" in pfa_nginx
    assert "dovecot:ARGON2ID" in files["/etc/postfixadmin/config.local.php"]


@pytest.mark.parametrize("grains,major", [(DEBIAN_GRAINS, "2.3"), (DEBIAN13_GRAINS, "2.4")],
                         ids=["Debian-12", "Debian-13"])
def test_postfixadmin_hashes_with_a_dovecot_configuration_its_pool_user_can_read(tmp_path, grains, major):
    # Dovecot 2.4's dovecot.conf holds the SQL password (0640 root:dovecot): PostfixAdmin's
    # `doveadm pw`, run as mf-postfixadmin, reads a configuration of its own with no secret.
    r = SaltRender(tmp_path, grains, pillar={"mailfleet": {
        "lookup": {"dovecot_major": major},
        "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw", "sync_password": "sy-pw"}}})
    high = r.show_sls("mail.webmail")
    files = r.render_all(high)
    local = files["/etc/postfixadmin/config.local.php"]
    assert ("$CONF['dovecotpw'] = '/usr/bin/doveadm -c /etc/postfixadmin/doveadm-pw.conf "
            "-o stats_writer_socket_path= pw';") in local
    (args,) = [c[3] for c in r.chunks(high) if c[3].get("name") == "/etc/postfixadmin/doveadm-pw.conf"]
    assert args["mode"] == "0644" and "password" not in args["contents"]
    assert ("dovecot_config_version = 2.4.0" in args["contents"]) is (major == "2.4")


def test_switched_off_only_removes(tmp_path):
    r, high, chunks = _render(tmp_path, DEBIAN_GRAINS, webmail={"enabled": False},
                              postfixadmin={"enabled": False})
    every = r.chunks(high)
    assert {c[1] + "." + c[2] for c in every} <= {"file.absent", "cmd.run", "mailfleet_webmail.db_user_absent"}
    assert {c[3]["name"] for c in every if c[1] == "mailfleet_webmail"} == {"roundcube", "mailfleet_pfadmin"}
    names = {c[3]["name"] for c in every if c[1] == "file"}
    assert "/etc/nginx/mailfleet-tls.d/roundcube.conf" in names
    assert "/etc/php/8.2/fpm/pool.d/mailfleet-postfixadmin.conf" in names


def test_one_application_switched_off_is_cleaned_while_the_other_stays(tmp_path):
    r, high, chunks = _render(tmp_path, DEBIAN_GRAINS, webmail={"enabled": False}, postfixadmin=GOOD["postfixadmin"])
    by_sls = {}
    for sid, body in high.items():
        by_sls.setdefault(body["__sls__"], set()).add(sid)
    assert by_sls["mail.webmail.clean"] == {"mailfleet-roundcube-pool-absent", "mailfleet-roundcube-nginx-absent",
                                            "mailfleet-roundcube-db-user-absent"}
    assert "mail.webmail.roundcube" not in by_sls and "mail.webmail.postfixadmin" in by_sls
    assert {"mailfleet-postfixadmin-pool", "mailfleet-postfixadmin-nginx"} <= set(high)
    assert not {sid for sid in high if sid.startswith("mailfleet-roundcube-") and not sid.endswith("-absent")}
    files = {c[3]["name"] for c in r.chunks(high) if c[1] == "file"}
    assert "/etc/php/8.2/fpm/pool.d/mailfleet-roundcube.conf" in files  # as file.absent
    assert "absent" in high["mailfleet-roundcube-pool-absent"]["file"]


def test_a_bad_webmail_pillar_stops_mail_validate_before_any_webmail_state(tmp_path):
    # one checker for every pillar key: mail.validate's mailfleet_config.valid (failhard,
    # order 1), which each webmail state requires
    r, high, chunks = _render(tmp_path, DEBIAN_GRAINS, webmail={**GOOD["webmail"], "des_key": "short"},
                              postfixadmin=GOOD["postfixadmin"])
    [valid] = [c for c in r.chunks(high) if c[1] == "mailfleet_config"]
    assert valid[3].get("failhard") is True
    ret = r.run_state(high, valid[0])
    assert ret["result"] is False and "mailfleet:webmail:des_key: must be exactly 24 characters" in ret["comment"]
    assert valid[3].get("order") == 1
    assert {"mailfleet_config": "mailfleet-settings-valid"} in chunks["mailfleet-webmail-packages"][3]["require"]


def test_freebsd_render_uses_port_paths(tmp_path):
    r, high, chunks = _render(tmp_path, FREEBSD_GRAINS)
    files = r.render_all(high)
    assert "/usr/local/etc/php-fpm.d/mailfleet-roundcube.conf" in files
    assert "/usr/local/etc/nginx/mailfleet-tls.d/roundcube.conf" in files
    assert "/usr/local/www/roundcube/config/config.inc.php" in files
    assert "/usr/local/bin/doveadm" in files["/usr/local/www/postfixadmin/config.local.php"]
    assert not [n for n in files if n.startswith(("/etc/php", "/etc/roundcube", "/etc/postfixadmin"))]
