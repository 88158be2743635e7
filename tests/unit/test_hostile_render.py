"""Hostile pillar values handed straight to the renderer, bypassing the ext_pillar (issue 14),
so quoting where values are used is exercised on its own: nothing hostile reaches a command
line or a config line. And every file that holds a secret is written without a diff in the
job return (show_changes: False)."""
import re
import shlex

import pytest

from salt_render import DEBIAN13_GRAINS, DEBIAN_GRAINS, SaltRender

# Quoting on its own: names that could not leave the webroot (no '/'), so the SLS renders
# their commands and only quoting keeps them harmless.
HOSTILE_DOMAINS = ["x.test;id>p;", "$(id).test", "`id`.test", "a.test && touch pwned", "a.test'; id; '"]
# A name that would be a path: refused by the SLS itself, no command rendered.
PATH_DOMAIN = "x.test;id>/tmp/p;"
BENIGN = "benign.test"


def _render(workdir, pillar):
    """SaltRender with our execution modules synced, as a minion has them at a highstate."""
    import salt.loader
    r = SaltRender(workdir, grains=DEBIAN_GRAINS, pillar=pillar)
    r.salt["saltutil.sync_modules"]()
    r.salt = salt.loader.minion_mods(r.opts, utils=r.utils)
    return r


def _mta_sts_pillar(domains):
    return {"mailfleet": {"domains": {d: {"hosts": ["mail01.lab.test"], "dns": {"mta_sts": {"mode": "testing"}}}
                                      for d in domains}}}


def _commands(high):
    """Every shell command line the rendered states would run (name, unless, onlyif)."""
    out = []
    for sid, mod, fun, args in SaltRender.chunks(high):
        if mod == "cmd":
            out.append((sid, "name", str(args["name"])))
        for req in ("unless", "onlyif"):
            for cmd in ([args[req]] if isinstance(args.get(req), str) else args.get(req) or []):
                if isinstance(cmd, str):
                    out.append((sid, req, cmd))
    return out


def _shape(cmd):
    """The command's shell structure: operators and redirections outside quotes, and whether
    any expansion ($, backquote) stands outside single quotes."""
    lex = shlex.shlex(cmd, posix=False, punctuation_chars=True)
    lex.whitespace_split = True
    ops, expands = [], False
    for tok in lex:
        if tok and all(c in "();<>|&" for c in tok):
            ops.append(tok)
        elif not tok.startswith("'") and ("$(" in tok or "`" in tok):
            expands = True
    return ops, expands


def test_a_hostile_domain_name_reaches_no_command_line_unquoted(tmp_path):
    benign = _render(tmp_path / "b", _mta_sts_pillar([BENIGN]))
    base = {(sid.replace(BENIGN, "D"), req): _shape(cmd) for sid, req, cmd in _commands(benign.show_sls("mail.mtasts"))
            if BENIGN in cmd}
    assert base, "the benign render has no command naming the domain: the test would prove nothing"
    for i, evil in enumerate(HOSTILE_DOMAINS):
        r = _render(tmp_path / str(i), _mta_sts_pillar([evil]))
        cmds = [(sid, req, cmd) for sid, req, cmd in _commands(r.show_sls("mail.mtasts")) if "id" in cmd or "pwned" in cmd]
        assert len(cmds) == len(base), (evil, cmds)
        for sid, req, cmd in cmds:
            ops, expands = _shape(cmd)
            assert not expands, f"{evil!r}: {sid} {req}: an expansion outside quotes: {cmd}"
            assert ops == base[(sid.replace(evil, "D"), req)][0], f"{evil!r}: {sid} {req} gained shell operators: {cmd}"
    r = _render(tmp_path / "path", _mta_sts_pillar([PATH_DOMAIN]))
    high = r.show_sls("mail.mtasts")
    assert not [c for c in _commands(high) if "tmp/p" in c[2]]
    ret = r.run_state(high, "mailfleet-settings-valid")   # mail.validate, included by mail.mtasts
    assert ret["result"] is False and "not a domain name" in ret["comment"]


PHP_LINE = re.compile(r"^\$config\['product_name'\] = '(?:[^'\\]|\\.)*';$")


def test_a_quote_in_a_roundcube_setting_stays_inside_its_php_string(tmp_path):
    evil = "Web'; system('id'); $x='\\"
    r = SaltRender(tmp_path, grains=DEBIAN_GRAINS,
                   pillar={"mailfleet": {"webmail": {"enabled": True, "product_name": evil}}})
    files = r.render_all(r.show_sls("mail.webmail"))
    (text,) = [t for path, t in files.items() if path.endswith("roundcube/config.inc.php")]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("$config['product_name']")]
    assert PHP_LINE.match(line), line


def test_a_newline_in_pillar_text_adds_no_config_line(tmp_path):
    evil = "Lab\nsmtpd_relay_restrictions = permit\n"
    pillar = {"mailfleet": {"webmail": {"enabled": True, "product_name": evil},
                            "domains": {"example-a.test": {"hosts": ["mail01.lab.test"], "description": evil,
                                                           "mailboxes": {"alice": {"name": evil}}}}}}
    r = SaltRender(tmp_path, grains=DEBIAN_GRAINS, pillar=pillar)
    files = r.render_all(r.show_sls("mail"))
    for path, text in files.items():
        assert "smtpd_relay_restrictions = permit" not in text.splitlines(), path


# --- secrets never shown in a job return ---------------------------------------------------

def _secrets(pillar):
    """Every value under a key that names a secret, from the rendered host's pillar."""
    found = set()

    def walk(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, str(k))
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and len(node) >= 8 and re.search(r"password|des_key|dqs_key|secret|^key$", key):
            found.add(node)
    walk(pillar.get("mailfleet") or {})
    return found


@pytest.mark.parametrize("grains", [DEBIAN_GRAINS, DEBIAN13_GRAINS], ids=["Debian-12", "Debian-13"])
def test_every_file_that_holds_a_secret_is_written_without_a_diff(tmp_path, grains):
    pillar = {"mailfleet": {"dnsbl": {"dqs_key": "dqs-secret-1234567890"},
                            "dkim": {"example-a.test": {"selector": "s1", "key_type": "rsa",
                                                        "key": "-----BEGIN PRIVATE KEY-----\nMIIsecret\n"}}}}
    r = SaltRender(tmp_path, grains=grains, pillar=pillar)
    secrets = _secrets(r.pillar)
    assert {"dqs-secret-1234567890"} < secrets and len(secrets) >= 4, secrets  # DB passwords, des_key, ...
    high = r.show_sls("mail")
    rendered = r.render_all(high)
    holding = []
    for sid, mod, fun, args in r.chunks(high):
        if mod != "file" or fun != "managed":
            continue
        text = rendered.get(args["name"]) if args.get("template") == "jinja" else None
        text = text if text is not None else str(args.get("contents") or "") + str(args.get("context") or "")
        if any(s in text for s in secrets):
            holding.append(sid)
            assert args.get("show_changes") is False, f"{sid} ({args['name']}) holds a secret and shows its diff"
    assert len(holding) >= 5, holding  # the test must see the secret-holding files to mean anything
