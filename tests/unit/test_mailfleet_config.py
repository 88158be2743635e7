"""
mailfleet_config.problems(): every bad pillar is refused with a message that names the exact
pillar key, so the postmaster knows which line of which pillar file to fix.
"""
import copy
import json

import pytest

import mailfleet_settings_check as mailfleet_config


def valid():
    """Merged settings as map.jinja hands them to mail.validate (defaults < OS < pillar)."""
    return {
        "os_family_grain": "Debian",
        "cert_dir": "/etc/letsencrypt/live/mail01.lab.test",
        "lookup": {"dovecot_major": "2.3", "os": "Debian"},
        "host": {"myhostname": "mail01.lab.test", "mydomain": "lab.test", "mynetworks_extra": [],
                 "postscreen": True, "submissions": False, "reject_unknown_helo_hostname": False,
                 "helo_required": True, "ssh_port": 22, "message_size_limit": 52428800,
                 "extra_tcp_ports": []},
        "tls": {"acme_server": "https://acme.lab.test:14000/dir", "contact": "postmaster@lab.test",
                "extra_names": []},
        "db": {"name": "postfix", "postfix_user": "mailfleet_postfix", "postfix_password": "a",
               "dovecot_user": "mailfleet_dovecot", "dovecot_password": "b",
               "sync_user": "mailfleet_sync", "sync_password": "c"},
        "vmail": {"user": "vmail", "uid": 5000, "gid": 5000},
        "firewall": {"ban_timeout": 600},
        "rspamd": {"milter": True, "milter_port": 11332, "controller_port": 11334,
                   "milter_default_action": "accept",
                   "actions": {"reject": 15, "add_header": 6, "greylist": None}},
    }


def with_(path, value):
    """valid() with one key set (value DELETE removes it); path like 'host:ssh_port'."""
    cfg = copy.deepcopy(valid())
    *parents, key = path.split(":")
    node = cfg
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[key]
    else:
        node[key] = value
    return cfg


DELETE = object()


def test_valid_settings_have_no_problems():
    assert mailfleet_config.problems(valid()) == []
    for major in ("2.3", "2.4"):
        assert mailfleet_config.problems(with_("lookup:dovecot_major", major)) == []
    assert mailfleet_config.problems(with_("os_family_grain", "FreeBSD")) == []
    assert mailfleet_config.problems(with_("host:extra_tcp_ports", [2222, 65535])) == []


@pytest.mark.parametrize("path, value, key", [
    # required keys: missing, empty or null
    ("tls:contact", DELETE, "mailfleet:tls:contact"),
    ("tls:contact", None, "mailfleet:tls:contact"),
    ("db:postfix_password", DELETE, "mailfleet:db:postfix_password"),
    ("db:dovecot_password", "", "mailfleet:db:dovecot_password"),
    ("db:sync_password", None, "mailfleet:db:sync_password"),
    # a Dovecot major the formula has no template for
    ("lookup:dovecot_major", "2.5", "mailfleet:lookup:dovecot_major"),
    ("lookup:dovecot_major", "2.2", "mailfleet:lookup:dovecot_major"),
    ("lookup:dovecot_major", None, "mailfleet:lookup:dovecot_major"),
    # ports
    ("host:ssh_port", 70000, "mailfleet:host:ssh_port"),
    ("host:ssh_port", "ssh", "mailfleet:host:ssh_port"),
    ("host:ssh_port", 0, "mailfleet:host:ssh_port"),
    ("host:ssh_port", "22", "mailfleet:host:ssh_port"),
    ("host:ssh_port", True, "mailfleet:host:ssh_port"),
    ("host:extra_tcp_ports", [2222, 70000], "mailfleet:host:extra_tcp_ports:1"),
    ("host:extra_tcp_ports", ["imap"], "mailfleet:host:extra_tcp_ports:0"),
    # names
    ("host:myhostname", "mail01", "mailfleet:host:myhostname"),
    ("host:myhostname", "mail_01.lab.test", "mailfleet:host:myhostname"),
    ("host:myhostname", "-mail01.lab.test", "mailfleet:host:myhostname"),
    ("host:mydomain", "localdomain", "mailfleet:host:mydomain"),
    ("tls:contact", "postmaster", "mailfleet:tls:contact"),
    # platform
    ("os_family_grain", "RedHat", "grains:os_family"),
    ("os_family_grain", None, "grains:os_family"),
    # the rest
    ("host:postscreen", "yes", "mailfleet:host:postscreen"),
    ("host:mynetworks_extra", ["10.0.0.0"], "mailfleet:host:mynetworks_extra:0"),
    ("host:message_size_limit", "50M", "mailfleet:host:message_size_limit"),
    # rspamd: mail is never refused because rspamd is down
    ("rspamd:milter_default_action", "reject", "mailfleet:rspamd:milter_default_action"),
    ("rspamd:milter_port", 0, "mailfleet:rspamd:milter_port"),
    ("rspamd:actions", {"reject": "high"}, "mailfleet:rspamd:actions:reject"),
])
def test_each_bad_setting_names_its_pillar_key(path, value, key):
    problems = mailfleet_config.problems(with_(path, value))
    assert len(problems) == 1, problems
    assert problems[0].startswith(key + ": "), problems[0]


def test_the_value_is_quoted_back():
    [problem] = mailfleet_config.problems(with_("lookup:dovecot_major", "2.5"))
    assert "2.5" in problem and "2.3, 2.4" in problem
    [problem] = mailfleet_config.problems(with_("host:ssh_port", 70000))
    assert "70000" in problem


def test_several_problems_are_all_reported():
    cfg = with_("host:ssh_port", 70000)
    cfg["lookup"]["dovecot_major"] = "2.5"
    cfg["db"]["sync_password"] = None
    keys = sorted(p.split(": ", 1)[0] for p in mailfleet_config.problems(cfg))
    assert keys == ["mailfleet:db:sync_password", "mailfleet:host:ssh_port",
                    "mailfleet:lookup:dovecot_major"]


def test_check_wraps_problems():
    from _modules import mailfleet_config as module
    assert module.check(valid()) == {"valid": True, "problems": []}
    out = module.check(with_("host:ssh_port", "ssh"))
    assert out["valid"] is False and out["problems"][0].startswith("mailfleet:host:ssh_port: ")
    out = module.check(valid(), {"a.test": {"selector": "s1", "key_type": "rsa", "key": "c2VjcmV0"}},
                       {"b.test": {"hosts": ["mail01.lab.test"], "dns": {"mta_sts": {"mode": "sometimes"}}}})
    assert out["problems"] == ["mailfleet:dkim:a.test:key: not a PEM private key",
                               next(p for p in out["problems"] if p.startswith("mailfleet:domains:b.test:dns:mta_sts"))]
    assert "c2VjcmV0" not in str(out)


def test_an_unsupported_os_family_renders_but_is_refused(tmp_path):
    """map.jinja falls back to Debian parameters for an unknown os_family, so the render works
    and mail.validate (failhard, order 1) is what refuses it, naming grains:os_family."""
    from salt_render import DEBIAN_GRAINS, SaltRender
    grains = dict(DEBIAN_GRAINS, os="Rocky", os_family="RedHat")
    r = SaltRender(tmp_path, grains, pillar={"mailfleet": {
        "lookup": {"dovecot_major": "2.3"},
        "db": {"postfix_password": "a", "dovecot_password": "b", "sync_password": "c"}}})
    high = r.show_sls("mail.validate")
    [(_sid, _mod, fun, args)] = r.chunks(high)
    assert fun == "valid" and args["failhard"] is True and args["order"] == 1
    problems = mailfleet_config.problems(args["config"])
    assert [p.split(": ", 1)[0] for p in problems] == ["grains:os_family"]


def test_the_map_leaves_mailfleet_domains_to_the_vusers_state(tmp_path):
    """mailfleet:domains (up to 100,000 mailboxes with their password hashes) never enters
    map.jinja's merged settings: mail.validate's arguments stay small and secret-free."""
    from salt_render import DEBIAN_GRAINS, SaltRender
    hashed = "{SHA512-CRYPT}$6$saltsaltsalt$" + "x" * 86
    r = SaltRender(tmp_path, DEBIAN_GRAINS, pillar={"mailfleet": {
        "lookup": {"dovecot_major": "2.3"},
        "db": {"postfix_password": "a", "dovecot_password": "b", "sync_password": "c"},
        "domains": {"example-a.test": {"mailboxes": {"alice": {"password": hashed}}}}}})
    [(_sid, _mod, _fun, args)] = r.chunks(r.show_sls("mail.validate"))
    assert "domains" not in args["config"]
    assert args["config"]["db"]["sync_password"] == "c"  # the other settings still arrive
    assert hashed not in json.dumps(args)
