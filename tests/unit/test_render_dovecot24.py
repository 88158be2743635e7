"""
Dovecot 2.3 and 2.4 configs rendered through Salt's templating with sample settings.

The 2.4 syntax was checked against the 2.4 documentation and the dovecot/core 2.4.1 sources
(citations at the top of salt/mail/files/dovecot-2.4.conf.jinja). No Dovecot 2.4 package
exists for Debian 12, so the doveconf check runs Debian 13's doveconf inside the lab's trixie
image (no boot: `mflab.image.run_in_image`), which refuses mail_location or a first setting
other than dovecot_config_version.
"""
import os
import re
import subprocess

import pytest

from salt_render import DEBIAN_GRAINS, SaltRender

CERT_DIR = "/etc/letsencrypt/live/mail01.lab.test"
SAMPLE = {
    "cert_dir": CERT_DIR,
    "os_family_grain": "Debian",
    "lookup": {"dovecot_major": "2.4", "vmail_home": "/var/vmail", "dovecot_dir": "/etc/dovecot",
               "mysql_socket": "/run/mysqld/mysqld.sock", "postfix_spool": "/var/spool/postfix"},
    "host": {"myhostname": "mail01.lab.test", "mydomain": "lab.test"},
    "db": {"name": "postfix", "dovecot_user": "mailfleet_dovecot",
           # every character that could break a dovecot.conf line or expand as a variable
           "dovecot_password": 'pa"ss #1 \\x %{user} %%{n} end'},
    "vmail": {"user": "vmail", "uid": 5000, "gid": 5000},
}

# The render is checked by Debian 13's own doveconf (Dovecot 2.4.1), run from the lab's
# trixie image; DOVECONF=/path/to/doveconf checks it against another 2.4 build instead.
DOVECONF = os.environ.get("DOVECONF")

# Settings that 2.4 renamed or removed (2.3-to-2.4 upgrade guide).
ONLY_23 = ["mail_location", "ssl_cert", "ssl_key", "ssl_dh", "ssl_prefer_server_ciphers",
           "disable_plaintext_auth", "default_pass_scheme", "password_query", "user_query",
           "connect", "driver", "args", "auth_username_format"]


@pytest.fixture(scope="module")
def render(tmp_path_factory):
    r = SaltRender(tmp_path_factory.mktemp("dovecot"), DEBIAN_GRAINS,
                   pillar={"mailfleet": {"lookup": {"dovecot_major": "2.3"}}})

    def _render(major):
        return r.render_source(f"salt://mail/files/dovecot-{major}.conf.jinja", {"mf": SAMPLE})
    return {"2.3": _render("2.3"), "2.4": _render("2.4")}


def settings(text):
    """(path, key, value) for every `key = value` line; path is the enclosing blocks."""
    out, stack = [], []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("{"):
            stack.append(line[:-1].strip())
        elif line == "}":
            stack.pop()
        else:
            key, _, value = line.partition("=")
            out.append(("/".join(stack), key.strip(), value.strip()))
    assert not stack, f"unbalanced braces: {stack}"
    return out


def listeners(text):
    """{(service, listener): port} for every inet_listener block."""
    out, stack = {}, []
    for raw in text.splitlines():
        line = raw.strip()
        if line.endswith("{"):
            stack.append(line[:-1].strip())
        elif line == "}":
            stack.pop()
        elif stack and stack[-1].startswith("inet_listener ") and line.startswith("port"):
            out[(stack[-2], stack[-1])] = int(line.split("=")[1])
    return out


def test_config_version_is_the_first_setting(render):
    first = settings(render["2.4"])[0]
    assert first == ("", "dovecot_config_version", "2.4.0")
    assert ("", "dovecot_storage_version", "2.4.0") in settings(render["2.4"])


def test_no_23_only_settings_or_variables_in_24(render):
    text = render["2.4"]
    keys = {key for _, key, _ in settings(text)}
    assert not keys & set(ONLY_23), keys & set(ONLY_23)
    # 2.3's one-letter variables (%u %d %n ...) are gone; only %{...} expansions remain.
    assert not re.findall(r"%[a-zA-Z]", text)
    assert "<" not in "".join(v for _, k, v in settings(text) if k.startswith("ssl_"))


def test_24_uses_the_24_names(render):
    s = {(path, key): value for path, key, value in settings(render["2.4"])}
    assert s[("", "ssl_server_cert_file")] == f"{CERT_DIR}/fullchain.pem"
    assert s[("", "ssl_server_key_file")] == f"{CERT_DIR}/privkey.pem"
    assert s[("", "auth_allow_cleartext")] == "no"
    assert s[("", "mail_driver")] == "maildir"
    assert s[("", "mail_path")] == "/var/vmail/%{user | domain}/%{user | username}"
    assert s[("", "sql_driver")] == "mysql"
    mysql = "mysql /run/mysqld/mysqld.sock"
    assert s[(mysql, "user")] == '"mailfleet_dovecot"'
    assert s[(mysql, "dbname")] == '"postfix"'
    assert "%{user}" in s[("passdb sql", "query")]
    assert "'/var/vmail/%{user | domain}/%{user | username}' AS home" in s[("userdb sql", "query")]
    assert s[("userdb sql", "iterate_query")].startswith("SELECT username AS user")
    # Postfix's parallel LMTP deliveries to one mailbox are never deferred by Dovecot
    assert s[("", "lmtp_user_concurrency_limit")] == "unlimited"
    assert s[("", "auth_verbose")] == "yes"  # the detector counts failed passwords
    assert s[('quota "User quota"', "quota_storage_grace")] == "0"  # a message that does not fit is refused
    assert s[("", "quota_status_toolarge")] == s[("", "quota_status_overquota")] == '"552 5.2.2 Mailbox is full"'


def test_24_password_is_quoted_and_never_expanded(render):
    s = {(path, key): value for path, key, value in settings(render["2.4"])}
    # \" and \\ inside "..."; %{ doubled to %%{ (and %%{ to %%%{) so it stays literal.
    assert s[("mysql /run/mysqld/mysqld.sock", "password")] == \
        r'"pa\"ss #1 \\x %%{user} %%%{n} end"'


def test_23_keeps_its_own_syntax(render):
    s = {(path, key): value for path, key, value in settings(render["2.3"])}
    assert s[("", "mail_location")] == "maildir:/var/vmail/%d/%n"
    assert s[("", "ssl_cert")] == f"<{CERT_DIR}/fullchain.pem"
    assert s[("passdb", "args")] == "/etc/dovecot/dovecot-sql.conf.ext"
    assert "dovecot_config_version" not in {k for _, k, _ in settings(render["2.3"])}


@pytest.mark.parametrize("major", ["2.3", "2.4"])
def test_tls_only_no_plaintext_imap_no_pop3(render, major):
    text = render[major]
    s = settings(text)
    assert ("", "ssl", "required") in s
    assert ("", "protocols", "imap lmtp") in s              # no pop3 protocol at all
    ports = listeners(text)
    open_ports = {port for port in ports.values() if port}
    assert open_ports == {993}, ports
    assert ports[("service imap-login", "inet_listener imap")] == 0      # 143 closed
    assert ports[("service imap-login", "inet_listener imaps")] == 993
    assert not {143, 110} & open_ports
    # Postfix reaches auth and LMTP through its own spool, owned by postfix.
    assert "unix_listener /var/spool/postfix/private/auth {" in text
    assert "unix_listener /var/spool/postfix/private/dovecot-lmtp {" in text


@pytest.mark.lab
def test_doveconf_24_accepts_the_render(render, tmp_path):
    conf = tmp_path / "dovecot.conf"
    # doveconf refuses a config whose login/internal users do not exist on this machine;
    # that is about the machine, not the syntax under test.
    conf.write_text(render["2.4"] + "default_login_user = nobody\n"
                    "default_internal_user = nobody\ndefault_internal_group = nogroup\n")
    if DOVECONF:
        out = subprocess.run([DOVECONF, "-n", "-P", "-c", str(conf)], capture_output=True, text=True)
    else:  # Debian 13's own doveconf, from the lab's trixie image (built when missing)
        from mflab import image
        out = image.run_in_image("trixie", ["doveconf", "-n", "-P", "-c", "/mnt/conf/dovecot.conf"],
                                 binds_ro={str(tmp_path): "/mnt/conf"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# 2.4"), out.stdout[:200]
    assert "dovecot_config_version = 2.4.0" in out.stdout
    # The password survives the parser whole (a bare # would have cut it at "pa").
    assert r'password = "pa\"ss #1 \\x %%{user} %%%{n} end"' in out.stdout
