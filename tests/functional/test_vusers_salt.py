"""The state and execution module through Salt itself (salt-call's Caller, file_client
local): pillar rendered from an SLS file, read in the module via __pillar__, the state
honouring test mode, against the real MariaDB."""
import json

import pytest
import salt.client
import salt.config

from vusers_testdata import SHA512, sample_pillar

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
STATE = "mailfleet_vusers_|-vusers_|-vusers_|-synced"


@pytest.fixture(autouse=True, scope="module")
def _salt_temp_log_handler():
    # Salt parks early log records in a deferred stderr handler flushed at exit, when
    # pytest has closed that stream already: hand them to the real handlers now.
    yield
    import salt._logging.impl

    salt._logging.impl.shutdown_temp_handler()


def _caller(tmp_path, mailfleet):
    root = tmp_path / "salt"
    pillar_dir = root / "pillar"
    pillar_dir.mkdir(parents=True)
    (pillar_dir / "top.sls").write_text("base:\n  'mail01.lab.test':\n    - vusers\n")
    # JSON is YAML: the pillar goes through Salt's renderer like a real pillar file
    (pillar_dir / "vusers.sls").write_text(json.dumps({"mailfleet": mailfleet}, ensure_ascii=False), encoding="utf-8")
    opts = salt.config.minion_config(None)
    opts.update({
        "id": "mail01.lab.test",
        "file_client": "local",
        "root_dir": str(root),
        "cachedir": str(root / "cache"),
        "pki_dir": str(root / "pki"),
        "sock_dir": str(root / "sock"),
        "extension_modules": str(root / "extmods"),
        "log_file": str(root / "minion.log"),
        "module_dirs": [str(ROOT / "_modules")],
        "states_dirs": [str(ROOT / "_states")],
        "pillar_roots": {"base": [str(pillar_dir)]},
        "file_roots": {"base": [str(root / "files")]},
        "enable_fqdns_grains": False,
    })
    return salt.client.Caller(mopts=opts)


def test_state_through_salt_loader(db, tmp_path):
    mailfleet = sample_pillar(db)
    caller = _caller(tmp_path, mailfleet)
    before = db.checksum()

    ret = caller.cmd("state.single", "mailfleet_vusers.synced", "vusers", test=True)[STATE]
    assert ret["result"] is None, ret["comment"]
    assert ret["changes"]["mailbox"]["insert"]["count"] == 4
    assert "test mode, nothing written" in ret["comment"]
    assert db.checksum() == before

    ret = caller.cmd("state.single", "mailfleet_vusers.synced", "vusers")[STATE]
    assert ret["result"] is True, ret["comment"]
    assert ret["changes"]["mailbox"]["insert"]["count"] == 4
    assert db.row("mailbox", "username", "alice@example-a.test")["active"] == 1

    ret = caller.cmd("state.single", "mailfleet_vusers.synced", "vusers")[STATE]
    assert ret["result"] is True and ret["changes"] == {}
    assert "no changes" in ret["comment"]

    # the execution module functions, as `salt-call mailfleet_vusers.diff` would run them
    assert caller.cmd("mailfleet_vusers.diff")["changed"] is False
    assert caller.cmd("mailfleet_vusers.validate")["result"] is True
    assert "mailfleet_vusers.compute_diff" not in caller.cmd("sys.list_functions", "mailfleet_vusers")


def test_state_reports_every_pillar_error(db, tmp_path):
    mailfleet = sample_pillar(db)
    mailfleet["domains"]["example-a.test"]["mailboxes"]["alice"]["password"] = "plain"
    mailfleet["domains"]["example-a.test"]["mailboxes"]["bob"]["quota"] = "12Q"
    caller = _caller(tmp_path, mailfleet)
    ret = caller.cmd("state.single", "mailfleet_vusers.synced", "vusers")[STATE]
    assert ret["result"] is False
    assert "mailfleet:domains:example-a.test:mailboxes:alice:password: plaintext password refused" in ret["comment"]
    assert "mailfleet:domains:example-a.test:mailboxes:bob:quota: invalid quota '12Q'" in ret["comment"]
    assert "plain" not in ret["comment"].replace("plaintext", "")
    assert "mailfleet_managed" not in db.tables()
