"""The mailfleet_domains ext_pillar: a host gets exactly the domains that name it."""
import os

import mailfleet_domains as ext  # from _pillar (pytest.ini pythonpath)


def write(folder, name, text):
    path = folder / name
    path.write_text(text)
    return path


DOMAIN_A = """
mailfleet:
  domains:
    a.test:
      hosts: [mail01.lab.test, mail02.lab.test]
      mailboxes: {alice: {password: "{SHA512-CRYPT}$6$x$y"}}
"""
DOMAIN_B = """
mailfleet:
  domains:
    b.test:
      hosts: [mail02.lab.test]
"""


def test_each_host_receives_only_the_domains_that_list_it(tmp_path):
    write(tmp_path, "a.test.yaml", DOMAIN_A)
    write(tmp_path, "b.test.yaml", DOMAIN_B)
    one = ext.ext_pillar("mail01.lab.test", {}, path=str(tmp_path))
    two = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path))
    assert list(one["mailfleet"]["domains"]) == ["a.test"]
    assert sorted(two["mailfleet"]["domains"]) == ["a.test", "b.test"]
    assert ext.ext_pillar("mail03.lab.test", {}, path=str(tmp_path)) == {}


def test_adding_a_file_onboards_and_editing_it_is_seen(tmp_path):
    assert ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path)) == {}
    path = write(tmp_path, "b.test.yaml", DOMAIN_B)
    assert "b.test" in ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path))["mailfleet"]["domains"]
    path.write_text(DOMAIN_B.replace("mail02", "mail03") + "\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path)) == {}


def test_a_broken_file_is_left_out_and_others_still_served(tmp_path):
    write(tmp_path, "a.test.yaml", DOMAIN_A)
    write(tmp_path, "broken.yaml", "mailfleet: {domains: [unclosed\n")
    got = ext.ext_pillar("mail01.lab.test", {}, path=str(tmp_path))
    assert list(got["mailfleet"]["domains"]) == ["a.test"]


def test_several_folders_first_declaration_wins(tmp_path):
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    write(first, "b.yaml", DOMAIN_B)
    write(second, "b.yaml", DOMAIN_B.replace("b.test:", "b.test:\n      description: second"))
    got = ext.ext_pillar("mail02.lab.test", {}, path=[str(first), str(second)])
    assert "description" not in got["mailfleet"]["domains"]["b.test"]


def test_dkim_keys_go_only_to_the_hosts_serving_the_domain(tmp_path):
    import json as _json

    folder = tmp_path / "domains"
    folder.mkdir()
    write(folder, "a.test.yaml", DOMAIN_A)
    write(folder, "b.test.yaml", DOMAIN_B)
    keys = tmp_path / "dkim"
    (keys / "b.test").mkdir(parents=True)
    (keys / "b.test" / "state.json").write_text(_json.dumps({"version": 1, "key_type": "rsa",
        "domain": "b.test", "selectors": [
            {"selector": "mf1", "status": "old_kept"},
            {"selector": "mf2", "status": "signing"}]}))
    (keys / "b.test" / "mf2.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), dkim_dir=str(keys))
    assert got["mailfleet"]["dkim"] == {"b.test": {"selector": "mf2", "key_type": "rsa",
                                                   "key": "-----BEGIN PRIVATE KEY-----\n"}}
    got = ext.ext_pillar("mail01.lab.test", {}, path=str(folder), dkim_dir=str(keys))
    assert "dkim" not in got["mailfleet"]
    # a key file that is gone: no key handed out, nothing else lost
    (keys / "b.test" / "mf2.key").unlink()
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), dkim_dir=str(keys))
    assert "dkim" not in got["mailfleet"] and "b.test" in got["mailfleet"]["domains"]
