"""Validation of the mailfleet pillar: every error names its pillar path."""
import copy

import pytest

import mailfleet_pillar as pillar_check
import mailfleet_pillar_values as values
import mailfleet_vusers_db as vdb
import mailfleet_vusers_rows as rows
import mailfleet_vusers_sync as vsync

SHA512 = "{SHA512-CRYPT}$6$saltsaltsalt$PMWE8DTlam1JU37Piyk43bHcMxTJq6sgu5DKB0/tGPjanN35jcY68QkpDfPFUGPWX5uCxIQkSPzMmqEiVNgts."
BLF = "{BLF-CRYPT}$2b$05$Si6T6/IPzREn46XzfQWE2uEAT4mxEcQrMYFBsNONWumHm52iB2mkK"
ARGON = "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$c29tZXNhbHRzb21lc2FsdA$n0Q3vQk1M1nqQnd5hGkzMJv9m7yXvKZxZ8RdV0X6pXk"
HINT = "use a {SCHEME} hash (ARGON2ID, SHA512-CRYPT, BLF-CRYPT)"
A = "mailfleet:domains:example-a.test"


def base():
    return {
        "postmaster": "hostmaster@example-a.test",
        "domains": {
            "example-a.test": {
                "quota": "10G",
                "mailboxes": {
                    "alice": {"name": "Alice", "password": ARGON},
                    "hostmaster": {"password": SHA512},
                },
                "aliases": {"info": ["alice@example-a.test"], "@": ["alice@example-a.test"]},
                "alias_domains": ["alias-a.test"],
            },
            "example-b.test": {"mailboxes": {"bob": {"password": BLF}}},
        },
    }


def errors_of(cfg):
    _, errors, _ = pillar_check.validate_pillar(cfg)
    return errors


def test_valid_pillar_has_no_errors():
    model, errors, warnings = pillar_check.validate_pillar(base())
    assert errors == [] and warnings == []
    assert model["domains"]["example-a.test"]["mailboxes"]["alice"]["quota"] == 10 * 1024**3


# ------------------------------------------------------------------------ primitives


@pytest.mark.parametrize("value,expected", [
    (0, 0), ("0", 0), (1234, 1234), ("512", 512), ("10B", 10), ("1K", 1024), ("1k", 1024),
    ("10M", 10 * 1024**2), ("10G", 10 * 1024**3), ("2T", 2 * 1024**4), ("1.5G", 1536 * 1024**2),
    (" 3 G ", 3 * 1024**3),
])
def test_parse_quota(value, expected):
    assert values.parse_quota(value) == expected


@pytest.mark.parametrize("value", ["10X", "10GB", "-1", -5, "G", "", True, None, 1.5, "1.5", "1e3"])
def test_parse_quota_rejects(value):
    with pytest.raises(ValueError):
        values.parse_quota(value)


@pytest.mark.parametrize("value", [ARGON, SHA512, BLF, "{sha512-crypt}" + SHA512.split("}", 1)[1],
                                   "{SHA512-CRYPT}$6$rounds=5000$abc$" + "a" * 86])
def test_password_accepted(value):
    assert values.check_password(value) is None


@pytest.mark.parametrize("value,why", [
    ("hunter2", f"plaintext password refused; {HINT}"),
    ("{PLAIN}hunter2", f"plaintext password refused; {HINT}"),
    ("{CLEARTEXT}hunter2", f"plaintext password refused; {HINT}"),
    ("{MD5-CRYPT}$1$abc$def", f"password scheme {{MD5-CRYPT}} refused; {HINT}"),
    (SHA512.split("}", 1)[1], f"hash without {{SCHEME}} prefix; {HINT}"),
    ("{SHA512-CRYPT}$6$short", "malformed {SHA512-CRYPT} hash"),
    ("{BLF-CRYPT}" + SHA512.split("}", 1)[1], "malformed {BLF-CRYPT} hash"),
    ("{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$c2FsdA$aGFzaA", "malformed {ARGON2ID} hash"),
    ("", f"missing password; {HINT}"),
    (None, f"missing password; {HINT}"),
])
def test_password_refused(value, why):
    assert values.check_password(value) == why


@pytest.mark.parametrize("name,expected", [
    ("Example-A.test", "example-a.test"), ("bücher.test", "xn--bcher-kva.test"),
    ("xn--bcher-kva.test", "xn--bcher-kva.test"), ("ÉCOLE.test", "xn--cole-9oa.test"),
    ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
])
def test_idna_domain(name, expected):
    assert values.idna_domain(name) == expected


@pytest.mark.parametrize("name", ["bad_domain.test", "localhost", "a..b.test", "-x.test", "x.test.", "", "a.123",
                                  "x" * 64 + ".test", "xn--zz.test", "sp ace.test"])
def test_idna_domain_rejects(name):
    with pytest.raises(ValueError):
        values.idna_domain(name)


# ------------------------------------------------------------------- paths in errors


def mutate(fn):
    cfg = base()
    fn(cfg)
    return errors_of(cfg)


def dom_a(cfg):
    return cfg["domains"]["example-a.test"]


CASES = [
    ("plaintext password",
     lambda c: dom_a(c)["mailboxes"]["alice"].update(password="secret"),
     f"{A}:mailboxes:alice:password: plaintext password refused; {HINT}"),
    ("password missing",
     lambda c: dom_a(c)["mailboxes"]["alice"].pop("password"),
     f"{A}:mailboxes:alice:password: missing password; {HINT}"),
    ("bad domain",
     lambda c: c["domains"].update({"under_score.test": {}}),
     "mailfleet:domains:under_score.test: invalid domain name 'under_score.test' (IDNA:"),
    ("duplicate domain after IDNA",
     lambda c: c["domains"].update({"EXAMPLE-A.test": {}}),
     "mailfleet:domains:EXAMPLE-A.test: duplicate domain example-a.test (also mailfleet:domains:example-a.test)"),
    ("bad local part",
     lambda c: dom_a(c)["mailboxes"].update({"a..b": {"password": SHA512}}),
     f"{A}:mailboxes:a..b: invalid local part 'a..b': not an ASCII dot-atom (RFC 5322)"),
    ("non-ascii local part",
     lambda c: dom_a(c)["mailboxes"].update({"jörg": {"password": SHA512}}),
     f"{A}:mailboxes:jörg: invalid local part 'jörg': not an ASCII dot-atom (RFC 5322)"),
    ("mailbox outside its domain",
     lambda c: dom_a(c)["mailboxes"].update({"zed@example-b.test": {"password": SHA512}}),
     f"{A}:mailboxes:zed@example-b.test: address zed@example-b.test is not inside domain example-a.test"),
    ("duplicate mailbox by case",
     lambda c: dom_a(c)["mailboxes"].update({"Alice": {"password": SHA512}}),
     f"{A}:mailboxes:Alice: duplicate mailbox alice@example-a.test (also {A}:mailboxes:alice)"),
    ("alias that is a mailbox",
     lambda c: dom_a(c)["aliases"].update({"alice": ["hostmaster@example-a.test"]}),
     f"{A}:aliases:alice: alias alice@example-a.test is also a mailbox ({A}:mailboxes:alice)"),
    ("alias written as full address that is a mailbox",
     lambda c: dom_a(c)["aliases"].update({"alice@example-a.test": ["hostmaster@example-a.test"]}),
     f"{A}:aliases:alice@example-a.test: alias alice@example-a.test is also a mailbox ({A}:mailboxes:alice)"),
    ("alias domain that is a real domain",
     lambda c: dom_a(c)["alias_domains"].append("example-b.test"),
     f"{A}:alias_domains[1]: alias domain example-b.test is also a real domain (mailfleet:domains:example-b.test)"),
    ("alias domain declared twice",
     lambda c: c["domains"]["example-b.test"].update(alias_domains=["alias-a.test"]),
     f"mailfleet:domains:example-b.test:alias_domains[0]: alias domain alias-a.test also declared at {A}:alias_domains[0]"),
    ("alias domain of itself",
     lambda c: dom_a(c)["alias_domains"].append("example-a.test"),
     f"{A}:alias_domains[1]: alias domain example-a.test points at itself"),
    ("alias loop",
     lambda c: dom_a(c)["aliases"].update({"l1": ["l2@example-a.test"], "l2": ["l1@example-a.test"]}),
     f"{A}:aliases:l1: alias loop: l1@example-a.test -> l2@example-a.test -> l1@example-a.test"),
    ("alias loop through an alias domain",
     lambda c: dom_a(c)["aliases"].update({"l1": ["l2@alias-a.test"], "l2": ["l1@alias-a.test"]}),
     f"{A}:aliases:l1: alias loop: l1@example-a.test -> l2@example-a.test -> l1@example-a.test"),
    ("alias to itself",
     lambda c: dom_a(c)["aliases"].update({"self": ["self@example-a.test", "alice@example-a.test"]}),
     f"{A}:aliases:self: alias loop: self@example-a.test -> self@example-a.test"),
    ("catch-all loop",
     lambda c: dom_a(c)["aliases"].update({"@": ["nobody@example-a.test"]}),
     f"{A}:aliases:@: alias loop: @example-a.test -> @example-a.test"),
    ("missing local target",
     lambda c: c["domains"]["example-b.test"].update(aliases={"x": ["nobody@example-b.test"]}),
     "mailfleet:domains:example-b.test:aliases:x[0]: target nobody@example-b.test does not exist (no mailbox or alias nobody@example-b.test declared)"),
    ("bad target",
     lambda c: dom_a(c)["aliases"].update({"x": ["not-an-address"]}),
     f"{A}:aliases:x[0]: invalid address 'not-an-address': expected local@domain"),
    ("quota unit",
     lambda c: dom_a(c)["mailboxes"]["alice"].update(quota="1Z"),
     f"{A}:mailboxes:alice:quota: invalid quota '1Z'; use a number with unit B, K, M, G or T (0 = unlimited)"),
    ("domain quota unit",
     lambda c: dom_a(c).update(quota="lots"),
     f"{A}:quota: invalid quota 'lots'; use a number with unit B, K, M, G or T (0 = unlimited)"),
    ("quota over maxquota",
     lambda c: dom_a(c).update(maxquota="20G") or dom_a(c)["mailboxes"]["alice"].update(quota="30G"),
     f"{A}:mailboxes:alice:quota: 30G exceeds the domain's maxquota 20G"),
    ("active not a boolean",
     lambda c: dom_a(c)["mailboxes"]["alice"].update(active="yes"),
     f"{A}:mailboxes:alice:active: must be true or false, not 'yes'"),
    ("retention",
     lambda c: dom_a(c).update(retention={"purge_after_days": -1}),
     f"{A}:retention:purge_after_days: must be a whole number of days >= 0, not -1"),
    ("description outside utf8mb3",
     lambda c: dom_a(c).update(description="mail 📬"),
     f"{A}:description: characters outside the Basic Multilingual Plane (PostfixAdmin's column is utf8mb3)"),
    ("postmaster invalid",
     lambda c: c.update(postmaster="nobody"),
     "mailfleet:postmaster: invalid address 'nobody': expected local@domain"),
    ("postmaster missing",
     lambda c: c.pop("postmaster"),
     f"mailfleet:postmaster: missing; needed for postmaster@example-a.test ({A} does not declare it)"),
    ("postmaster target missing",
     lambda c: c.update(postmaster="nobody@example-b.test"),
     "mailfleet:postmaster: target nobody@example-b.test does not exist"),
    ("domains missing",
     lambda c: c.pop("domains"),
     "mailfleet:domains: missing (an empty mapping {} declares no domains)"),
]


@pytest.mark.parametrize("name,fn,expected", CASES, ids=[c[0] for c in CASES])
def test_error_names_its_path(name, fn, expected):
    errors = mutate(fn)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_errors_reported_together():
    cfg = base()
    for name, fn, _ in CASES:
        if name == "domains missing" or name.startswith("postmaster"):
            continue
        try:
            fn(cfg)
        except (KeyError, AttributeError):
            pass
    errors = errors_of(cfg)
    assert len(errors) >= 15
    assert f"{A}:mailboxes:alice:password: missing password; {HINT}" in errors
    assert f"{A}:mailboxes:alice:quota: 30G exceeds the domain's maxquota 20G" in errors


def test_secrets_never_in_messages():
    cfg = base()
    dom_a(cfg)["mailboxes"]["alice"]["password"] = "Sup3rSecret!"
    dom_a(cfg)["mailboxes"]["hostmaster"]["password"] = "{SHA512-CRYPT}$6$truncated-Secret"
    assert not [e for e in errors_of(cfg) if "Secret" in e]


def test_external_targets_are_warnings():
    cfg = base()
    dom_a(cfg)["aliases"]["fwd"] = ["someone@elsewhere.test"]
    model, errors, warnings = pillar_check.validate_pillar(cfg)
    assert errors == []
    assert warnings == [f"{A}:aliases:fwd[0]: target someone@elsewhere.test is external (not checked)"]


def test_catch_all_target_is_a_warning():
    cfg = base()
    dom_a(cfg)["aliases"]["fwd"] = ["typo@example-a.test"]
    _, errors, warnings = pillar_check.validate_pillar(cfg)
    assert errors == []
    assert warnings == [f"{A}:aliases:fwd[0]: target typo@example-a.test has no mailbox or alias; only the catch-all @example-a.test receives it"]


def test_postmaster_and_abuse_are_implicit_unless_declared():
    cfg = base()
    c = copy.deepcopy(cfg)
    c["domains"]["example-b.test"]["aliases"] = {"abuse": ["bob@example-b.test"]}
    model, errors, _ = pillar_check.validate_pillar(c)
    assert errors == []
    a = model["domains"]["example-a.test"]["aliases"]
    assert a["postmaster"]["targets"] == ["hostmaster@example-a.test"] and a["postmaster"]["implicit"]
    assert a["abuse"]["targets"] == ["hostmaster@example-a.test"]
    b = model["domains"]["example-b.test"]["aliases"]
    assert b["abuse"]["targets"] == ["bob@example-b.test"] and not b["abuse"]["implicit"]
    assert b["postmaster"]["implicit"]
    # declared as a mailbox: no alias
    c["domains"]["example-b.test"]["mailboxes"]["postmaster"] = {"password": SHA512}
    model, errors, _ = pillar_check.validate_pillar(c)
    assert "postmaster" not in model["domains"]["example-b.test"]["aliases"]


def test_postmaster_pointing_at_an_undeclared_postmaster_is_a_loop():
    cfg = base()
    cfg["postmaster"] = "postmaster@example-b.test"
    errors = errors_of(cfg)
    assert any(e.startswith("mailfleet:domains:example-b.test:aliases:postmaster (implicit, from mailfleet:postmaster): alias loop")
               for e in errors), errors


def test_unicode_keys_stored_as_punycode():
    cfg = base()
    cfg["domains"]["bücher.test"] = {"mailboxes": {"carol": {"password": SHA512}},
                                     "aliases": {"c": ["carol@BÜCHER.test"]}}
    model, errors, _ = pillar_check.validate_pillar(cfg)
    assert errors == []
    assert model["domains"]["xn--bcher-kva.test"]["aliases"]["c"]["targets"] == ["carol@xn--bcher-kva.test"]
    assert model["domains"]["xn--bcher-kva.test"]["path"] == "mailfleet:domains:bücher.test"


def test_db_settings():
    assert vdb.validate_db(None) == ["mailfleet:db: missing or not a mapping (name, host, sync_user, sync_password)"]
    assert vdb.validate_db({"name": "postfix"}) == ["mailfleet:db:sync_password: missing"]
    assert vdb.validate_db({"sync_password": "p", "sync_user": 5}) == ["mailfleet:db:sync_user: must be a string"]
    settings, errors = vdb.db_settings({"sync_password": "p", "postfix_password": "x"}, socket="/run/x.sock")
    assert errors == []
    assert settings["name"] == "postfix" and settings["sync_user"] == "mailfleet_sync"
    assert settings["host"] == "localhost" and settings["socket"] == "/run/x.sock"
    settings, _ = vdb.db_settings({"sync_password": "p", "socket": "/mine.sock"}, socket="/run/x.sock")
    assert settings["socket"] == "/mine.sock"


def test_lab_pillar_is_valid():
    """The lab's own pillar files (the contract in use) validate cleanly."""
    import pathlib

    import yaml

    root = pathlib.Path(__file__).resolve().parents[2] / "pillar"
    files = [root / "lab" / "hosts" / "mail01.sls"] + sorted((root / "domains").glob("*.yaml"))
    if len(files) < 2 or not all(f.exists() for f in files):
        pytest.fail("the committed lab pillar is missing")
    merged = {"domains": {}}
    for f in files:
        mf = (yaml.safe_load(f.read_text()) or {}).get("mailfleet", {})
        merged["domains"].update(mf.pop("domains", {}) or {})
        merged.update(mf)
    model, errors, _ = pillar_check.validate_pillar(merged)
    assert errors == []
    assert vdb.validate_db(merged["db"]) == []
    desired, _ = rows.desired_rows(model, host="mail01.lab.test")
    assert "example-a.test" in desired["domain"]
    assert all(d not in desired["domain"] for d, spec in model["domains"].items()
               if spec["hosts"] and "mail01.lab.test" not in spec["hosts"])


def test_run_sync_refuses_before_connecting():
    cfg = base()
    cfg["db"] = {"name": "postfix", "sync_user": "s", "sync_password": "p", "socket": "/nonexistent"}
    dom_a(cfg)["mailboxes"]["alice"]["password"] = "plain"
    ret = vsync.run_sync(cfg)
    assert ret["result"] is False
    assert ret["errors"] == [f"{A}:mailboxes:alice:password: plaintext password refused; {HINT}"]
    assert ret["comment"].startswith("pillar invalid, nothing written (1 error):")


def _packed_like_the_ext_pillar(cfg):
    import json

    out = copy.deepcopy(cfg)
    for data in out["domains"].values():
        inner = {k: data.pop(k) for k in ("mailboxes", "aliases") if k in data}
        data[pillar_check.PACKED_KEY] = json.dumps(inner)
    return out


def test_packed_domains_validate_to_the_same_model_and_paths():
    cfg = base()
    model, errors, warnings = pillar_check.validate_pillar(cfg)
    p_model, p_errors, p_warnings = pillar_check.validate_pillar(_packed_like_the_ext_pillar(cfg))
    assert (p_model, p_errors, p_warnings) == (model, errors, warnings) and not errors
    bad = base()
    bad["domains"]["example-a.test"]["mailboxes"]["alice"]["password"] = "plain"
    assert errors_of(_packed_like_the_ext_pillar(bad)) == errors_of(bad) != []
    assert any(e.startswith(f"{A}:mailboxes:alice:password") for e in errors_of(bad))


@pytest.mark.parametrize("text, expected", [
    ("{not json", f"{A}:packed_json: not valid JSON"),
    ('["a list"]', f"{A}:packed_json: must be a JSON object"),
    ('{"mailboxes": {}}', f"{A}:packed_json: mailboxes given both packed and as written"),
])
def test_a_bad_packed_value_is_an_error_naming_its_path(text, expected):
    cfg = base()
    cfg["domains"]["example-a.test"][pillar_check.PACKED_KEY] = text
    assert any(e.startswith(expected) for e in errors_of(cfg)), errors_of(cfg)
