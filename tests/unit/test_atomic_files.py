"""The one atomic writer (_utils/mailfleet_files.py), used for keys, hold maps, the detector's
files, the DKIM state and the pillar caches: what a reader or a crash can and cannot see."""
import json
import os
import stat

import pytest

import mailfleet_files as mf


def test_a_key_is_never_readable_by_others_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "keys" / "mail01.json"
    mf.write_json(path, {"kid": "a"})
    first_inode = os.stat(path).st_ino
    mf.write_json(path, {"kid": "b"})
    assert json.loads(path.read_text()) == {"kid": "b"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert os.stat(path).st_ino != first_inode        # a rename, not a rewrite in place
    assert os.listdir(path.parent) == ["mail01.json"]  # no temporary file left


def test_a_map_for_postfix_gets_the_mode_asked_for(tmp_path):
    path = tmp_path / "mailfleet_sasl_hold.seq"
    mf.write_atomic(path, "7\n", mode=0o644)
    assert path.read_text() == "7\n" and stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    mf.write_json(path, {"n": 1})
    with pytest.raises(TypeError):
        mf.write_json(path, {"n": object()})          # not JSON: fails before any file
    with pytest.raises(TypeError, match="str or bytes"):
        mf.write_atomic(path, 42)                     # not 42 zero bytes
    # a full disk at the rename is a fault this machine cannot cause for a test: simulated
    def full(*_a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(mf.os, "replace", full)
    with pytest.raises(OSError):
        mf.write_json(path, {"n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"n": 1}
    assert os.listdir(tmp_path) == ["state.json"]


def test_bytes_are_written_as_given(tmp_path):
    path = tmp_path / "cache.msgpack"
    mf.write_atomic(path, b"\x00\x01\xff", fsync=False)
    assert path.read_bytes() == b"\x00\x01\xff"
