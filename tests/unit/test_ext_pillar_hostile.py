"""Hostile or broken domain files at the mailfleet_domains ext_pillar (issue 14): refused with
an error naming the file and the key, an alert raised, the last good version still served
(also by a master that restarted), and no secret handed to a host the file does not name."""
import importlib
import os
import sys

import pytest

import mailfleet_domains as ext  # from _pillar (pytest.ini pythonpath)

GOOD = """
mailfleet:
  domains:
    example-a.test:
      hosts: [mail01.lab.test]
      description: Lab domain A
      mailboxes: {alice: {password: "{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}
"""


@pytest.fixture
def alerts(monkeypatch):
    seen = []
    monkeypatch.setattr(ext, "_alert", lambda opts, path, problems: seen.append((path, list(problems))), raising=False)
    return seen


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "domains"
    d.mkdir()
    return d


def served(minion, folder, cachedir):
    return (ext.ext_pillar(minion, {}, path=str(folder), cachedir=str(cachedir)).get("mailfleet") or {}).get("domains") or {}


def rewrite(path, text, ns):
    path.write_text(text)
    os.utime(path, ns=(ns, ns))  # a different stamp even on coarse clocks


def test_hosts_written_as_a_string_gives_nobody_the_domain(folder, tmp_path, alerts):
    (folder / "a.yaml").write_text(GOOD.replace("hosts: [mail01.lab.test]", 'hosts: "xmail01.lab.test"'))
    for minion in ("m", "mail01", "lab.test", "xmail01.lab.test", "mail01.lab.test"):
        assert served(minion, folder, tmp_path / "c") == {}, minion
    assert alerts and "hosts" in " ".join(alerts[0][1]) and alerts[0][0].endswith("a.yaml")


def test_a_domain_name_that_is_not_a_domain_is_refused_naming_the_file_and_key(folder, tmp_path, alerts):
    (folder / "evil.yaml").write_text(GOOD.replace("example-a.test:", "'x.test;id>/tmp/p;':"))
    assert served("mail01.lab.test", folder, tmp_path / "c") == {}
    (path, problems), = alerts
    assert path.endswith("evil.yaml") and any("mailfleet:domains:x.test;id>/tmp/p;" in p for p in problems)


def test_a_local_part_with_a_slash_is_refused(folder, tmp_path, alerts):
    (folder / "a.yaml").write_text(GOOD.replace("alice:", "bob/.Sent:"))
    assert served("mail01.lab.test", folder, tmp_path / "c") == {}
    assert any("bob/.Sent" in p for p in alerts[0][1])


def test_a_broken_file_keeps_its_last_good_version_also_after_a_master_restart(folder, tmp_path, alerts):
    path = folder / "example-a.test.yaml"
    rewrite(path, GOOD, 10**9)
    cache = tmp_path / "cache"
    assert served("mail01.lab.test", folder, cache)["example-a.test"]["description"] == "Lab domain A"
    rewrite(path, GOOD.replace("description: Lab domain A", "description: [unclosed"), 2 * 10**9)
    assert served("mail01.lab.test", folder, cache)["example-a.test"]["description"] == "Lab domain A"
    assert alerts and alerts[-1][0] == str(path)
    # a master restart: every in-process cache gone, only the disk cache left
    sys.modules.pop("_mailfleet_domains_wire_cache", None)
    fresh = importlib.reload(ext)
    fresh._alert = lambda opts, p, problems: alerts.append((p, list(problems)))
    got = (fresh.ext_pillar("mail01.lab.test", {}, path=str(folder), cachedir=str(cache))["mailfleet"]["domains"])
    assert got["example-a.test"]["description"] == "Lab domain A"
    # fixed: the change applies
    rewrite(path, GOOD.replace("Lab domain A", "Lab domain A, fixed"), 3 * 10**9)
    got = (fresh.ext_pillar("mail01.lab.test", {}, path=str(folder), cachedir=str(cache))["mailfleet"]["domains"])
    assert got["example-a.test"]["description"] == "Lab domain A, fixed"


def test_an_invalid_edit_keeps_the_last_good_version(folder, tmp_path, alerts):
    path = folder / "example-a.test.yaml"
    rewrite(path, GOOD, 10**9)
    cache = tmp_path / "cache"
    assert "example-a.test" in served("mail01.lab.test", folder, cache)
    rewrite(path, GOOD.replace('password: "{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"', "password: plaintext"), 2 * 10**9)
    got = served("mail01.lab.test", folder, cache)
    assert got["example-a.test"]["mailboxes"]["alice"]["password"] == "{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert any("password" in p for p in alerts[-1][1])


def test_a_domain_declared_twice_keeps_its_first_home_and_the_second_host_gets_no_key(folder, tmp_path, alerts):
    cache = tmp_path / "cache"
    rewrite(folder / "a.yaml", GOOD, 10**9)
    assert "example-a.test" in served("mail01.lab.test", folder, cache)
    rewrite(folder / "b.yaml", GOOD.replace("mail01.lab.test", "mail02.lab.test").replace("Lab domain A", "hijack"),
            2 * 10**9)
    assert served("mail01.lab.test", folder, cache)["example-a.test"]["description"] == "Lab domain A"
    assert "example-a.test" not in served("mail02.lab.test", folder, cache)
    assert any("example-a.test" in p and "a.yaml" in p for p in alerts[-1][1]), alerts


def test_a_domain_declared_in_two_folders_is_refused_in_the_second(tmp_path, alerts):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    (first / "a.yaml").write_text(GOOD)
    (second / "a.yaml").write_text(GOOD.replace("Lab domain A", "second").replace("mail01.lab.test", "mail02.lab.test"))
    got = ext.ext_pillar("mail01.lab.test", {}, path=[str(first), str(second)], cachedir=str(tmp_path / "c"))
    assert got["mailfleet"]["domains"]["example-a.test"]["description"] == "Lab domain A"
    assert ext.ext_pillar("mail02.lab.test", {}, path=[str(first), str(second)], cachedir=str(tmp_path / "c")) == {}
    assert alerts
