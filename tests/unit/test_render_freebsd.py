"""
The whole `mail` formula rendered for FreeBSD (grains only; nothing runs): state.show_sls
through Salt's own loader, then every Jinja file template the states name, rendered with
the context the state passes (file.get_managed). A Debian render is the control.

What is asserted is what a FreeBSD postmaster would check: configs under /usr/local/etc,
postfix and dovecot locked with `pkg lock`, base sendmail off (all four rc.conf knobs) and
our daemons on, pf instead of nftables, the port's Postfix paths, and no Debian path.
"""
import json
import re

import pytest

from salt_render import DEBIAN_GRAINS, FREEBSD_GRAINS, SaltRender

SQL_MAPS = ["domains", "mailboxes", "alias_domain_mailboxes", "aliases", "alias_domain_aliases",
            "catchall", "alias_domain_catchall", "sender_login"]

# Strings that only a Debian (or any systemd/nftables) host has. Lookbehinds keep the
# FreeBSD spelling of the same file (/usr/local/etc/postfix) from matching.
DEBIAN_ONLY = [
    r"(?<!/usr/local)/etc/postfix\b",
    r"(?<!/usr/local)/etc/dovecot\b",
    r"(?<!/usr/local)/etc/letsencrypt\b",
    r"(?<!/usr/local)/etc/nginx\b",
    r"(?<!/usr/local)/etc/mysql\b",
    r"/etc/nftables",
    r"\bnftables\b",
    r"\bnft\b",
    r"\bsystemctl\b",
    r"\bsystemd\b",
    r"\.timer\b",
    r"/usr/lib/postfix",
    r"/var/lib/postfix",
    r"/run/mysqld",
    r"/etc/ssl/certs/ca-certificates\.crt",
    r"sites-enabled",
    r"/var/www\b",
    r"(?<!/mail)/etc/aliases\b",
    r"/usr/sbin/sendmail",
    r"/usr/bin/newaliases",
    r"(?<!/usr/local)/etc/rspamd\b",
    r"\b_rspamd\b",
    r"/var/lib/rspamd",
]


def _pillar(major):
    # The lab pillar (pillar/top.sls for mail01.lab.test) plus: the Dovecot major fixed, so
    # the render never depends on a dovecot binary on this machine; DB passwords given, so
    # it does not depend on the lab's host pillar file either.
    return {"mailfleet": {
        "lookup": {"dovecot_major": major},
        "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw", "sync_password": "sy-pw"},
    }}


class Render:
    def __init__(self, tmp, grains, major):
        self.salt = SaltRender(tmp, grains, pillar=_pillar(major))
        self.high = self.salt.show_sls("mail")
        self.chunks = self.salt.chunks(self.high)
        self.files = self.salt.render_all(self.high)
        # Non-template sources are shipped as they are: read them for the leak check too.
        self.static = {
            c[3]["name"]: self.salt.salt["cp.get_file_str"](c[3]["source"], saltenv="base")
            for c in self.chunks
            if c[1] == "file" and c[2] == "managed" and not c[3].get("template")
            and str(c[3].get("source", "")).startswith("salt://")
            and not c[3]["source"].endswith(".sql")
        }

    def by_id(self, sid, module=None):
        found = [c for c in self.chunks if c[0] == sid and (module is None or c[1] == module)]
        assert found, f"no state {sid!r}"
        return found[0][3]

    def cmds(self):
        return [c[3]["name"] for c in self.chunks if c[1] == "cmd"]

    def managed(self):
        return {c[3]["name"]: c for c in self.chunks if c[1] == "file" and c[2] == "managed"}

    def all_text(self):
        high = json.dumps(self.high, sort_keys=True, default=str)
        return "\n".join([high, *self.files.values(), *self.static.values()])


@pytest.fixture(scope="module")
def freebsd(tmp_path_factory):
    return Render(tmp_path_factory.mktemp("freebsd"), FREEBSD_GRAINS, "2.3")


@pytest.fixture(scope="module")
def freebsd24(tmp_path_factory):
    return Render(tmp_path_factory.mktemp("freebsd24"), FREEBSD_GRAINS, "2.4")


@pytest.fixture(scope="module")
def debian(tmp_path_factory):
    return Render(tmp_path_factory.mktemp("debian"), DEBIAN_GRAINS, "2.3")


def _main_cf(text):
    return dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line
                and not line.startswith("#"))


def _master_services(text):
    """(service, type) -> the chroot column, for every service line of master.cf."""
    out = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 8 and not line[0].isspace() and not line.startswith("#"):
            out[(fields[0], fields[1])] = fields[4]
    return out


# --- FreeBSD ---------------------------------------------------------------------------

def test_every_sls_renders_and_every_template_is_rendered(freebsd):
    sls = {body["__sls__"] for body in freebsd.high.values()}
    assert sls == {"mail.validate", "mail.packages", "mail.vmail", "mail.database", "mail.tls", "mail.postfix",
                   "mail.dovecot", "mail.rspamd", "mail.firewall", "mail.defense", "mail.dnsbl",
                   "mail.vusers", "mail.mtasts", "mail.outbound_hold", "mail.sasl_hold",
                   "mail.nginx.config", "mail.nginx.service", "mail.webmail.php_fpm", "mail.webmail.nginx",
                   "mail.webmail.roundcube", "mail.webmail.postfixadmin"}
    templated = {c[3]["source"] for c in freebsd.salt.file_templates(freebsd.high)}
    assert templated == {
        "salt://mail/files/postfix-main.cf.jinja", "salt://mail/files/postfix-master.cf.jinja",
        "salt://mail/files/postfix-sql.cf.jinja", "salt://mail/files/dovecot-2.3.conf.jinja",
        "salt://mail/files/dovecot-sql.conf.ext.jinja", "salt://mail/files/nginx-mailfleet.conf.jinja",
        "salt://mail/files/pf.conf.jinja", "salt://mail/files/rspamd-local.conf.jinja",
        "salt://mail/files/nginx-mta-sts.conf.jinja",   # mail.mtasts (no domain with it here)
        "salt://mail/files/mailfleet-watch-run.jinja",  # mail.defense: the detector's launcher
        # mail.webmail: the lab pillar switches Roundcube and PostfixAdmin on for mail01
        "salt://mail/files/php-fpm-pool.conf.jinja", "salt://mail/files/nginx-webmail.conf.jinja",
        "salt://mail/files/roundcube-config.inc.php.jinja",
        "salt://mail/files/postfixadmin-config.local.php.jinja",
        "salt://mail/files/postfixadmin-dbconfig.inc.php.jinja"}
    assert all(text.strip() for text in freebsd.files.values())


def test_mail_configs_live_under_usr_local_etc(freebsd):
    managed = freebsd.managed()
    expected = ["/usr/local/etc/postfix/main.cf", "/usr/local/etc/postfix/master.cf",
                "/usr/local/etc/dovecot/dovecot.conf", "/usr/local/etc/dovecot/dovecot-sql.conf.ext",
                "/usr/local/etc/nginx/conf.d/mailfleet.conf", "/usr/local/etc/nginx/nginx.conf",
                "/usr/local/etc/mysql/conf.d/90-mailfleet.cnf", "/usr/local/etc/mail/mailer.conf",
                *[f"/usr/local/etc/postfix/sql/{m}.cf" for m in SQL_MAPS]]
    for path in expected:
        assert path in managed, path
    # The SQL maps hold the DB password: root:postfix 0640, and they talk to FreeBSD's socket.
    for m in SQL_MAPS:
        args = managed[f"/usr/local/etc/postfix/sql/{m}.cf"][3]
        assert (args["user"], args["group"], args["mode"]) == ("root", "postfix", "0640")
        text = freebsd.files[f"/usr/local/etc/postfix/sql/{m}.cf"]
        assert "hosts = unix:/var/run/mysql/mysql.sock" in text
        assert "password = pf-pw" in text


def test_postfix_and_dovecot_are_pkg_locked_after_install(freebsd):
    assert set(freebsd.by_id("mailfleet-packages", "pkg")["pkgs"]) >= {"postfix-mysql", "dovecot"}
    for name in ("postfix-mysql", "dovecot"):
        lock = freebsd.by_id(f"mailfleet-pkg-lock-{name}")
        assert lock["name"] == f"pkg lock -y {name}"
        assert lock["require"] == [{"pkg": "mailfleet-packages"}]
        assert f"'^{name}-'" in lock["unless"]      # idempotent: only when not yet locked


def test_sysrc_turns_base_sendmail_off_and_the_stack_on(freebsd):
    cmds = freebsd.cmds()
    for knob in ("sendmail_enable", "sendmail_submit_enable", "sendmail_outbound_enable",
                 "sendmail_msp_queue_enable"):
        assert f"sysrc {knob}=NO" in cmds, knob
    for knob in ("postfix_enable", "dovecot_enable", "mysql_enable", "nginx_enable", "pf_enable"):
        assert f"sysrc {knob}=YES" in cmds, knob
    assert "service sendmail onestop" in cmds           # rc.conf alone waits for a reboot
    # mailwrapper(8) hands sendmail/mailq/newaliases to Postfix.
    mailer = freebsd.by_id("mailfleet-mailer-conf")
    assert mailer["source"] == "/usr/local/share/postfix/mailer.conf.postfix"
    periodic = [c for c in cmds if c.startswith("sysrc -f /etc/periodic.conf ")]
    assert "sysrc -f /etc/periodic.conf daily_submit_queuerun=NO" in periodic
    assert "sysrc -f /etc/periodic.conf weekly_certbot_enable=YES" in periodic


def test_pf_not_nftables(freebsd):
    rules = freebsd.by_id("mailfleet-pf-rules")
    assert rules["name"] == "/etc/pf.conf" and rules["check_cmd"] == "pfctl -n -f"
    assert "pfctl -f /etc/pf.conf" in freebsd.cmds()
    assert not [c for c in freebsd.chunks if "nft" in c[0]]
    pf = freebsd.files["/etc/pf.conf"]
    assert "table <mailfleet_banned> persist" in pf
    assert "block in quick from <mailfleet_banned>" in pf
    assert re.search(r"^block in all$", pf, re.M)
    ports = re.search(r"pass in proto tcp to port \{ ([\d, ]+) \} keep state", pf).group(1)
    assert [int(p) for p in ports.split(", ")] == [22, 25, 80, 443, 465, 587, 993]


def test_postfix_uses_the_ports_paths(freebsd):
    main = _main_cf(freebsd.files["/usr/local/etc/postfix/main.cf"])
    assert main["daemon_directory"] == "/usr/local/libexec/postfix"
    assert main["command_directory"] == "/usr/local/sbin"
    assert main["data_directory"] == "/var/db/postfix"
    assert main["queue_directory"] == "/var/spool/postfix"
    assert main["sendmail_path"] == "/usr/local/sbin/sendmail"
    assert main["newaliases_path"] == "/usr/local/bin/newaliases"
    assert main["mailq_path"] == "/usr/local/bin/mailq"
    assert main["alias_maps"] == main["alias_database"] == "hash:/etc/mail/aliases"
    assert main["smtp_tls_CAfile"] == "/usr/local/share/certs/ca-root-nss.crt"
    live = "/usr/local/etc/letsencrypt/live/mail01.lab.test"
    assert main["smtpd_tls_cert_file"] == f"{live}/fullchain.pem"
    assert main["virtual_mailbox_domains"] == "proxy:mysql:/usr/local/etc/postfix/sql/domains.cf"
    assert main["virtual_transport"] == "lmtp:unix:private/dovecot-lmtp"
    assert "/usr/local/bin/newaliases" in freebsd.cmds()
    assert freebsd.by_id("mailfleet-postfix-main-cf")["check_cmd"] == \
        "/usr/local/sbin/mailfleet-postfix-check main"


def test_postfix_runs_nothing_chrooted_on_freebsd(freebsd):
    services = _master_services(freebsd.files["/usr/local/etc/postfix/master.cf"])
    assert services[("smtp", "inet")] == "n" and services[("submission", "inet")] == "n"
    assert set(services.values()) == {"n"}


def test_dovecot_23_on_freebsd(freebsd):
    conf = freebsd.files["/usr/local/etc/dovecot/dovecot.conf"]
    assert "args = /usr/local/etc/dovecot/dovecot-sql.conf.ext" in conf
    assert "ssl_cert = </usr/local/etc/letsencrypt/live/mail01.lab.test/fullchain.pem" in conf
    assert "unix_listener /var/spool/postfix/private/auth {" in conf
    sql = freebsd.files["/usr/local/etc/dovecot/dovecot-sql.conf.ext"]
    assert "connect = host=/var/run/mysql/mysql.sock " in sql


def test_dovecot_24_on_freebsd(freebsd24):
    managed = freebsd24.managed()
    conf_state = managed["/usr/local/etc/dovecot/dovecot.conf"][3]
    assert conf_state["source"] == "salt://mail/files/dovecot-2.4.conf.jinja"
    assert conf_state["mode"] == "0640"                 # 2.4 keeps the SQL password in it
    assert "/usr/local/etc/dovecot/dovecot-sql.conf.ext" not in managed
    conf = freebsd24.files["/usr/local/etc/dovecot/dovecot.conf"]
    assert "mysql /var/run/mysql/mysql.sock {" in conf
    assert "ssl_server_cert_file = /usr/local/etc/letsencrypt/live/mail01.lab.test/fullchain.pem" in conf


def test_renewal_and_reload_without_systemd(freebsd):
    assert not [c for c in freebsd.chunks if c[0] == "mailfleet-certbot-timer"]
    hook = freebsd.by_id("mailfleet-certbot-deploy-hook")
    assert hook["name"].startswith("/usr/local/etc/letsencrypt/renewal-hooks/deploy/")
    assert 'service "$s" reload' in hook["contents"]
    nginx = freebsd.by_id("mailfleet-nginx-main-conf")["contents"]
    assert "include /usr/local/etc/nginx/conf.d/*.conf;" in nginx


def test_rspamd_on_freebsd(freebsd):
    managed = freebsd.managed()
    for part in ("worker-proxy.inc", "dkim_signing.conf", "milter_headers.conf", "actions.conf"):
        args = managed[f"/usr/local/etc/rspamd/local.d/{part}"][3]
        assert args["check_cmd"] == (f"/usr/local/sbin/mailfleet-rspamd-check "
                                     f"/usr/local/etc/rspamd local.d/{part}")
    keys = freebsd.by_id("mailfleet-rspamd-dkim-dir")
    assert (keys["name"], keys["group"], keys["mode"]) == ("/var/db/rspamd/dkim", "rspamd", "0750")
    assert "sysrc rspamd_enable=YES" in freebsd.cmds()
    signing = freebsd.files["/usr/local/etc/rspamd/local.d/dkim_signing.conf"]
    assert 'path_map = "/usr/local/etc/rspamd/mailfleet/dkim_paths.map";' in signing
    main = _main_cf(freebsd.files["/usr/local/etc/postfix/main.cf"])
    assert main["smtpd_milters"] == "inet:127.0.0.1:11332"
    assert main["milter_default_action"] == "accept"


@pytest.mark.parametrize("which", ["freebsd", "freebsd24"])
def test_no_debian_path_leaks_into_the_freebsd_render(which, request):
    text = request.getfixturevalue(which).all_text()
    leaks = {p: m.group(0) for p in DEBIAN_ONLY if (m := re.search(p, text))}
    assert not leaks, leaks


# --- Debian (control) ------------------------------------------------------------------

def test_debian_control(debian):
    managed = debian.managed()
    for path in ["/etc/postfix/main.cf", "/etc/postfix/master.cf", "/etc/dovecot/dovecot.conf",
                 "/etc/nftables.d/mailfleet.nft", *[f"/etc/postfix/sql/{m}.cf" for m in SQL_MAPS]]:
        assert path in managed, path
    assert not [c for c in debian.chunks if c[0].startswith(("mailfleet-pkg-lock-",
                                                            "mailfleet-rc-", "mailfleet-periodic-",
                                                            "mailfleet-pf-", "mailfleet-mailer"))]
    assert "nft -f /etc/nftables.d/mailfleet.nft" in debian.cmds()
    assert debian.by_id("mailfleet-certbot-timer")["name"] == "certbot.timer"
    main = _main_cf(debian.files["/etc/postfix/main.cf"])
    assert main["daemon_directory"] == "/usr/lib/postfix/sbin"
    assert main["alias_maps"] == "hash:/etc/aliases"
    assert main["smtp_tls_CAfile"] == "/etc/ssl/certs/ca-certificates.crt"
    services = _master_services(debian.files["/etc/postfix/master.cf"])
    assert services[("smtp", "inet")] == "y"              # Debian keeps its chroot
    assert "/usr/local" not in debian.all_text()
