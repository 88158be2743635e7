"""
Both ways a Salt engineer deploys our extension modules load them, with no path loader left:

- the repository named in ``module_dirs`` (the lab's and the README's master config);
- ``saltutil.sync_all`` copying them into ``extension_modules`` (the usual master and
  minion setup, and what a host's first highstate does before anything imports them).

Each layout runs real ``salt-run`` / ``salt-call --local`` processes (no daemons: the
loader is the same) and calls functions whose modules import their libraries from
``_utils`` plainly, and a runner that calls another runner through ``__salt__``.
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RELAY_LINE = ("2026-11-25T19:56:01.000000+00:00 mail01 postfix/smtpd[4000]: NOQUEUE: reject: RCPT from "
              "unknown[198.19.8.1]: 454 4.7.1 <x@example.net>: Relay access denied; from=<y@example.org> "
              "to=<x@example.net> proto=ESMTP helo=<unknown>\n")
LAYOUTS = ("module_dirs", "sync_all")


def _run(argv, stdin=None, timeout=120):
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    return json.loads(proc.stdout)


def _config(tmp, role, layout):
    root = tmp / f"{role}-{layout}"
    (root / "conf").mkdir(parents=True)
    conf = {"root_dir": str(root / "root"), "user": "root", "extension_modules": str(root / "ext"),
            "file_roots": {"base": [str(REPO / "salt")]}}
    if layout == "module_dirs":
        conf["module_dirs"] = [str(REPO / "salt")]
    if role == "minion":
        (root / "pillar").mkdir()
        conf.update({"id": "layout.test", "file_client": "local", "pillar_roots": {"base": [str(root / "pillar")]}})
    else:
        conf["mailfleet_dkim_dir"] = str(root / "dkim")
        # the runner's job process file: salt-run writes one before it runs anything
        (root / "root" / "var" / "cache" / "salt" / "master" / "proc").mkdir(parents=True)
    (root / "conf" / role).write_text(json.dumps(conf))
    return root


@pytest.fixture(scope="module", params=LAYOUTS)
def minion_call(request, tmp_path_factory):
    root = _config(tmp_path_factory.mktemp("layout"), "minion", request.param)

    def call(*args):
        return _run([str(BIN / "salt-call"), "-c", str(root / "conf"), "--local", "--out=json", *args])["local"]
    if request.param == "sync_all":
        synced = call("saltutil.sync_all")
        assert "utils.mailfleet_records" in synced["utils"] and "modules.mailfleet_dnsrecords" in synced["modules"]
    call.root, call.layout = root, request.param
    return call


@pytest.fixture(scope="module", params=LAYOUTS)
def master_run(request, tmp_path_factory):
    root = _config(tmp_path_factory.mktemp("layout"), "master", request.param)

    def run(*args, stdin=None):
        return _run([str(BIN / "salt-run"), "-c", str(root / "conf"), "--out=json", *args], stdin=stdin)
    if request.param == "sync_all":
        synced = run("saltutil.sync_all")
        assert "runners.mailfleet_dns" in synced["runners"] and "utils.mailfleet_dkimkeys" in synced["utils"]
        assert (root / "root" / str(root / "ext").lstrip("/") / "utils" / "mailfleet_records.py").exists()
    def raw(*args):
        proc = subprocess.run([str(BIN / "salt-run"), "-c", str(root / "conf"), "--out=json", *args],
                              capture_output=True, text=True, timeout=120, check=False)
        return proc.stdout + proc.stderr
    run.layout, run.raw = request.param, raw
    return run


def test_a_mail_host_loads_every_thin_module_and_its_libraries(minion_call):
    names = minion_call("sys.list_functions", "mailcheck", "mailfleet_dnsrecords", "mailfleet_maillog",
                        "mailfleet_queue", "mailfleet_dnsbl", "mailfleet_certwatch")
    assert names == ["mailcheck.report", "mailcheck.ritual", "mailfleet_certwatch.reload", "mailfleet_certwatch.renew", "mailfleet_certwatch.settings",
                     "mailfleet_certwatch.status", "mailfleet_dnsbl.check", "mailfleet_dnsrecords.mta_sts_policy",
                     "mailfleet_maillog.scan", "mailfleet_queue.queue_settings", "mailfleet_queue.status"]


def test_the_mta_sts_policy_comes_from_the_record_library(minion_call):
    got = minion_call("mailfleet_dnsrecords.mta_sts_policy", "example-a.test",
                      json.dumps({"hosts": ["mail01.lab.test"], "dns": {"mta_sts": {"mode": "enforce"}}}))
    assert got["problems"] == [] and "mode: enforce" in got["policy"] and "mx: mail01.lab.test" in got["policy"]
    assert re.fullmatch(r"v=STSv1; id=\w+", got["record"])


def test_a_log_is_scanned_with_the_detectors_parser_and_rules(minion_call):
    log = minion_call.root / "mail.log"
    log.write_text(RELAY_LINE * 3)
    got = minion_call("mailfleet_maillog.scan", str(log))
    assert got["events"] == {"relay": 3}
    assert got["top"] == [{"ip": "198.19.8.1", "rules": {"relay": 3}}]


def test_bad_pillar_for_the_detector_names_the_key(minion_call):
    proc = subprocess.run([str(BIN / "salt-call"), "-c", str(minion_call.root / "conf"), "--local", "--out=json",
                           "mailfleet_queue.queue_settings", '{"deferred": -1}'],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0 and "mailfleet:defense:queue:deferred" in proc.stdout + proc.stderr


def test_every_runner_loads(master_run):
    docs = master_run("doc.runner")
    loaded = {name.split(".")[0] for name in docs}
    ours = {p.stem for p in (REPO / "_runners").glob("*.py")}
    assert ours <= loaded, ours - loaded


def test_a_runner_hashes_with_the_shared_password_rules(master_run):
    hashed = master_run("mailfleet_password.hash", stdin="a passphrase\n")
    assert hashed.startswith("{ARGON2ID}$argon2id$")


def test_a_runner_calls_another_runner_through_salt(master_run):
    # mailfleet_dkim.status asks mailfleet_dns.fleet_data (through __salt__) for the served
    # domains; with no master daemon the inner runner gets as far as targeting minions,
    # which shows the call crossed runner modules in this layout.
    out = master_run.raw("mailfleet_dkim.status", "domains=example-a.test")
    assert "mailfleet_dns.py" in out and "in fleet_data" in out and "master could not be contacted" in out


def test_no_product_code_loads_a_module_by_path():
    hits = []
    for sub in ("_modules", "_runners", "_states", "_pillar", "_utils"):
        for path in (REPO / sub).glob("*.py"):
            text = path.read_text()
            for needle in ("importlib", "spec_from_file_location", "exec_module", "sys.path.", "sys.path[",
                           "__file__"):
                if needle in text:
                    hits.append(f"{path.relative_to(REPO)}: {needle}")
    assert hits == []


def _surface(sub):
    """{virtualname.function} each file of ``sub`` declares in its ``__load__``."""
    import ast
    out = set()
    for path in (REPO / sub).glob("*.py"):
        tree = ast.parse(path.read_text())
        values = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
                  for t in n.targets if isinstance(t, ast.Name)}
        assert "__load__" in values, f"{path.relative_to(REPO)} declares no __load__ (its operator surface)"
        name = ast.literal_eval(values["__virtualname__"]) if "__virtualname__" in values else path.stem
        out |= {f"{name}.{fn}" for fn in ast.literal_eval(values["__load__"])}
    return out


def _lacking_cli_example(docs):
    return sorted(name for name, doc in docs.items()
                  if "CLI Example" not in (doc or "") or name not in (doc or ""))


def test_salt_run_d_lists_only_operator_functions_each_with_a_cli_example(master_run):
    docs = {n: d for n, d in master_run("doc.runner").items() if n.split(".")[0] in
            {p.stem for p in (REPO / "_runners").glob("*.py")}}
    assert set(docs) == _surface("_runners")
    assert "mailfleet_dkim.drive" not in docs and "mailfleet_defense.decide" not in docs
    assert _lacking_cli_example(docs) == []


def test_sys_doc_lists_only_operator_functions_each_with_a_cli_example(minion_call):
    ours = {p.stem for p in (REPO / "_modules").glob("*.py")}
    docs = {n: d for n, d in minion_call("sys.doc", *sorted(ours)).items() if n.split(".")[0] in ours}
    expected = _surface("_modules")
    if not shutil.which("doveadm"):  # a host without Dovecot: mailfleet_password declines to load
        assert not any(n.startswith("mailfleet_password.") for n in docs)
        expected = {n for n in expected if not n.startswith("mailfleet_password.")}
    assert set(docs) == expected
    assert "mailfleet_ban.plan" not in docs and "mailfleet_webmail.admin_sql" not in docs
    assert _lacking_cli_example(docs) == []
