"""
mail.nginx owns nginx (issue 15): the check script, the snippet folder and the service are
written once, there; mail.tls, mail.mtasts and mail.webmail only write their sites and
reload through mail/nginx/reload.jinja, each reload behind an `nginx -t` of the whole
configuration that runs when, and only when, the files it watches changed.
Rendered for mail01 of the lab (webmail and PostfixAdmin on, an MTA-STS domain).
"""
import pytest

from salt_render import DEBIAN_GRAINS, FREEBSD_GRAINS, SaltRender

MODS = "mail.tls,mail.mtasts,mail.webmail"


def _chunks(tmp, grains):
    r = SaltRender(tmp, grains, pillar={"mailfleet": {"lookup": {"dovecot_major": "2.3"}}})
    high = r.show_sls(MODS)
    return high, {c[0] + "|" + c[1]: c for c in r.chunks(high)}


@pytest.fixture(scope="module", params=[("debian", DEBIAN_GRAINS), ("freebsd", FREEBSD_GRAINS)], ids=lambda p: p[0])
def rendered(request, tmp_path_factory):
    return _chunks(tmp_path_factory.mktemp("nginx-" + request.param[0]), request.param[1])


def _req(args, kind):
    return [next(iter(r.items())) for r in (args.get(kind) or [])]


def test_nginx_itself_is_written_once_by_mail_nginx(rendered):
    high, chunks = rendered
    scripts = [c for c in chunks.values() if c[1] == "file" and c[3]["name"].endswith("/mailfleet-nginx-check")]
    assert [(c[0], high[c[0]]["__sls__"]) for c in scripts] == [("mailfleet-nginx-check-script", "mail.nginx.config")]
    enabled = [c for c in chunks.values() if c[1] == "service" and c[3]["name"] == "nginx" and c[3].get("enable")]
    assert [(c[0], high[c[0]]["__sls__"]) for c in enabled] == [("mailfleet-nginx", "mail.nginx.service")]


def test_every_later_reload_runs_nginx_t_on_the_files_it_watches(rendered):
    high, chunks = rendered
    reloads = {c[0]: c for c in chunks.values() if c[1] == "service" and c[3]["name"] == "nginx"
               and not c[3].get("enable")}
    assert set(reloads) == {"mailfleet-nginx-tls-reload", "mailfleet-mta-sts-nginx-reload",
                            "mailfleet-webmail-nginx-reload"}
    for sid, (_s, _m, _f, args) in reloads.items():
        [(kind, check)] = [r for r in _req(args, "require") if r[0] == "cmd"]
        check_args = chunks[check + "|cmd"][3]
        assert check_args["name"] == "nginx -t -q", sid
        assert _req(check_args, "onchanges") == _req(args, "watch") != [], sid
        assert ("service", "mailfleet-nginx") in _req(args, "require"), sid
    # the webmail locations go live after the HTTPS server they sit in
    assert ("service", "mailfleet-nginx-tls-reload") in _req(reloads["mailfleet-webmail-nginx-reload"][3], "require")
    assert ("file", "mailfleet-nginx-tls-site") in _req(reloads["mailfleet-nginx-tls-reload"][3], "watch")


def test_site_files_are_checked_against_the_live_configuration(rendered):
    high, chunks = rendered
    sites = {sid: c for sid, c in chunks.items()
             if c[1] == "file" and c[2] == "managed" and "mailfleet-nginx-check " in str(c[3].get("check_cmd"))}
    assert {c[0] for c in sites.values()} >= {"mailfleet-mta-sts-site", "mailfleet-roundcube-nginx",
                                              "mailfleet-postfixadmin-nginx"}
    for c in sites.values():
        assert ("file", "mailfleet-nginx-check-script") in _req(c[3], "require"), c[0]
