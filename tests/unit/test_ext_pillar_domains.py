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
      mailboxes: {alice: {password: "{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}
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


def _fresh_module(alias):
    """Another copy of the module, as the master's loader makes one per pillar request."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(alias, ext.__file__)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _count_yaml_parses(monkeypatch):
    calls = []
    real = ext.yaml.load

    def counting(stream, Loader):
        calls.append(getattr(stream, "name", "?"))
        return real(stream, Loader=Loader)

    monkeypatch.setattr(ext.yaml, "load", counting)
    return calls


def _forget_process_cache(folder):
    for path in [p for p in ext._CACHE if p.startswith(str(folder))]:
        del ext._CACHE[path]
    ext._SHARED.disk.clear()


def test_a_fresh_copy_of_the_module_does_not_parse_the_files_again(tmp_path, monkeypatch):
    write(tmp_path, "a.test.yaml", DOMAIN_A)
    write(tmp_path, "b.test.yaml", DOMAIN_B)
    parses = _count_yaml_parses(monkeypatch)
    first = _fresh_module("mailfleet_domains_copy1").ext_pillar("mail02.lab.test", {}, path=str(tmp_path))
    second = _fresh_module("mailfleet_domains_copy2").ext_pillar("mail02.lab.test", {}, path=str(tmp_path))
    assert first == second and sorted(first["mailfleet"]["domains"]) == ["a.test", "b.test"]
    assert len(parses) == 2  # each file once, not once per copy


def test_a_cold_process_starts_from_the_disk_cache_and_still_sees_edits(tmp_path, monkeypatch):
    folder, cache = tmp_path / "domains", tmp_path / "cache"
    folder.mkdir()
    write(folder, "a.test.yaml", DOMAIN_A)
    path_b = write(folder, "b.test.yaml", DOMAIN_B)
    ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    files = list((cache / "mailfleet_domains").glob("*.msgpack"))
    assert len(files) == 1 and oct(files[0].stat().st_mode & 0o777) == "0o600"

    _forget_process_cache(folder)  # a new master worker
    parses = _count_yaml_parses(monkeypatch)
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    assert sorted(got["mailfleet"]["domains"]) == ["a.test", "b.test"] and parses == []

    _forget_process_cache(folder)
    path_b.write_text(DOMAIN_B.replace("hosts: [mail02.lab.test]", "hosts: [mail02.lab.test]\n      description: edited"))
    os.utime(path_b, ns=(2, 2))
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    assert got["mailfleet"]["domains"]["b.test"]["description"] == "edited"
    assert parses == [str(path_b)]


def test_a_damaged_disk_cache_is_ignored_and_rewritten(tmp_path):
    folder, cache = tmp_path / "domains", tmp_path / "cache"
    folder.mkdir()
    write(folder, "b.test.yaml", DOMAIN_B)
    ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    (cache_file,) = (cache / "mailfleet_domains").glob("*.msgpack")
    cache_file.write_bytes(b"\xc1 not msgpack")
    _forget_process_cache(folder)
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    assert list(got["mailfleet"]["domains"]) == ["b.test"]
    assert cache_file.read_bytes() != b"\xc1 not msgpack"


def _many(folder, n_domains, per_domain):
    for i in range(n_domains):
        boxes = "\n".join(f"        u{j}: {{password: '{{SHA512-CRYPT}}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}}" for j in range(per_domain))
        write(folder, f"d{i}.test.yaml",
              f"mailfleet:\n  domains:\n    d{i}.test:\n      hosts: [mail02.lab.test]\n"
              f"      description: D {i}\n      mailboxes:\n{boxes}\n"
              f"      aliases: {{info: [u0@d{i}.test]}}\n")


def test_a_small_host_gets_its_domains_as_written(tmp_path):
    _many(tmp_path, 3, 5)
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path))
    assert sorted(got["mailfleet"]["domains"]["d1.test"]) == ["aliases", "description", "hosts", "mailboxes"]


def test_a_hosting_box_gets_mailboxes_and_aliases_packed_and_nothing_lost(tmp_path):
    import json as _json

    _many(tmp_path, 4, 5)  # 4 x (5 mailboxes + 1 alias) = 24 > pack_over
    plain = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path), pack_over=None)
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path), pack_over=20)
    for dom, data in got["mailfleet"]["domains"].items():
        assert sorted(data) == ["description", "hosts", "packed_json"]
        inner = _json.loads(data["packed_json"])
        rebuilt = {k: v for k, v in data.items() if k != "packed_json"} | inner
        assert rebuilt == plain["mailfleet"]["domains"][dom]
    again = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path), pack_over=20)
    assert again == got
    assert all(again["mailfleet"]["domains"][d] is got["mailfleet"]["domains"][d] for d in got["mailfleet"]["domains"])


def test_a_domain_json_cannot_carry_is_sent_as_written(tmp_path):
    _many(tmp_path, 4, 5)
    write(tmp_path, "odd.test.yaml", "mailfleet:\n  domains:\n    odd.test:\n      hosts: [mail02.lab.test]\n"
                                     "      mailboxes: {123: {password: '{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'}}\n")
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(tmp_path), pack_over=20)
    assert got["mailfleet"]["domains"]["odd.test"]["mailboxes"] == {123: {"password": "{SHA512-CRYPT}$6$saltsalt$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}
    assert "packed_json" in got["mailfleet"]["domains"]["d0.test"]


def test_a_worker_that_read_the_disk_cache_before_takes_what_another_parsed_since(tmp_path, monkeypatch):
    folder, cache = tmp_path / "domains", tmp_path / "cache"
    folder.mkdir()
    write(folder, "a.test.yaml", DOMAIN_A)
    ext.ext_pillar("mail01.lab.test", {}, path=str(folder), cachedir=str(cache))  # this worker, warm
    ext.ext_pillar("mail01.lab.test", {}, path=str(folder), cachedir=str(cache))  # has read the cache file
    assert ext._SHARED.disk
    mine = {p: v for p, v in ext._CACHE.items() if p.startswith(str(folder))}
    mine_disk = dict(ext._SHARED.disk)  # the cache file as this worker last read it

    # another worker parses a new file and rewrites the cache file
    _forget_process_cache(folder)
    path_b = write(folder, "b.test.yaml", DOMAIN_B)
    ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    (cache_file,) = (cache / "mailfleet_domains").glob("*.msgpack")
    os.utime(cache_file, ns=(10**18, 10**18))  # a rewrite the first worker has not seen

    # back in the first worker: its memory knows a.test only, the disk knows b.test too
    _forget_process_cache(folder)
    ext._CACHE.update(mine)
    ext._SHARED.disk.update(mine_disk)
    parses = _count_yaml_parses(monkeypatch)
    got = ext.ext_pillar("mail02.lab.test", {}, path=str(folder), cachedir=str(cache))
    assert sorted(got["mailfleet"]["domains"]) == ["a.test", "b.test"] and parses == []
    assert str(path_b) in ext._CACHE
