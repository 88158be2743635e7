"""
The mail-log detector runs with these settings (issue 12: without restarting the minion).

.. code-block:: yaml

    mailfleet-watch-settings:
      mailfleet_detector.configured:
        - name: /var/lib/mailfleet/watch      # the detector's directory (launcher, settings, status)
        - settings: {host: mail01.lab.test, log: /var/log/mail.log, thresholds: {...}, ...}
        - timeout: 30

Writes ``<name>/settings.json`` (0600: the DNSBL part can hold the DQS key) when it differs,
then waits until the detector (_utils/mailfleet_watch.py, started by the minion's
``mailfleet_watch`` script engine) says in ``<name>/status.json`` that it runs these settings
and the code now synced to this minion. So the highstate returns once the settings are live,
and the minion is never restarted for them. ``test=True`` names the keys that would change
(never their values: a secret may be among them).

A minion started without the engine stanza (config/minion.d/mailfleet.conf) cannot start the
detector until it restarts: the state writes the stanza to minion.d/mailfleet-watch.conf and
fails, saying so, rather than restart the minion under the running job.
"""
import hashlib
import json
import os
import time

import salt.utils.yaml

import mailfleet_watch

__virtualname__ = "mailfleet_detector"
STANZA_FILE = "mailfleet-watch.conf"


def __virtual__():
    return __virtualname__


def _read(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _status(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def _engine_configured(opts):
    engines = opts.get("engines") or []
    if isinstance(engines, dict):
        engines = [{k: v} for k, v in engines.items()]
    return any(isinstance(e, dict) and "mailfleet_watch" in e for e in engines)


def _changed_keys(old, new):
    try:
        old = json.loads(old) if old else {}
    except ValueError:
        old = {}
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def configured(name, settings, timeout=30):
    """
    The detector in directory ``name`` runs ``settings`` (a mapping, written as JSON).

    name
        The detector's directory (``mailfleet_watch.DEFAULT_WATCH_DIR`` unless the
        minion's engine stanza says otherwise).
    settings
        What the detector reads: host, log, interval, poll, max_ips, thresholds, state_file,
        and the dnsbl / certs / queue parts (absent or null: that check is off).
    timeout
        Seconds to wait for the detector to load them.
    """
    ret = {"name": name, "result": True, "changes": {}, "comment": ""}
    path = os.path.join(name, mailfleet_watch.SETTINGS)
    old = _read(path)
    try:
        same = old is not None and json.loads(old) == json.loads(json.dumps(settings))
    except ValueError:
        same = False
    keys = [] if same else _changed_keys(old, settings)
    configured_here = _engine_configured(__opts__)
    if __opts__["test"]:
        if not same:
            ret["result"] = None
            ret["changes"] = {"settings": {"keys": keys or ["(layout)"]}}
            ret["comment"] = f"{path} would be written ({', '.join(keys) or 'same values'}); the detector reloads it"
        else:
            ret["comment"] = f"{path} is as wanted"
        if not configured_here:
            ret["result"] = None
            ret["comment"] += "; the minion has no mailfleet_watch engine stanza yet (a restart would be needed)"
        return ret
    if not same:
        os.makedirs(name, mode=0o700, exist_ok=True)
        mailfleet_watch.write_json(path, settings, 0o600)
        ret["changes"] = {"settings": {"keys": keys or ["(layout)"]}}
    text = _read(path)
    if not configured_here:
        conf_dir = os.path.join(os.path.dirname(__opts__["conf_file"]), "minion.d")
        stanza = os.path.join(conf_dir, STANZA_FILE)
        want = "# Managed by mailfleet (mail.defense): the detector's engine.\n" + salt.utils.yaml.safe_dump(
            {"engines": [mailfleet_watch.ENGINE_STANZA]}, default_flow_style=False)
        if (_read(stanza) or b"").decode() != want:
            os.makedirs(conf_dir, exist_ok=True)
            with open(stanza, "w", encoding="utf-8") as handle:
                handle.write(want)
            ret["changes"]["engine_stanza"] = stanza
        ret["result"] = False
        ret["comment"] = (f"this minion was started without the mailfleet_watch engine (install "
                          f"config/minion.d/mailfleet.conf with the minion); {stanza} is written: restart "
                          f"the minion once, when no job runs, to start the detector")
        return ret
    want = {"settings": hashlib.sha256(text).hexdigest(),
            "code": mailfleet_watch.digest(mailfleet_watch.code_files(__opts__["extension_modules"]))}
    status_path = os.path.join(name, mailfleet_watch.STATUS)
    deadline = time.monotonic() + float(timeout)
    while True:
        st = _status(status_path)
        if st.get("settings") == want["settings"] and st.get("code") == want["code"] and _alive(st.get("pid")):
            break
        if time.monotonic() >= deadline:
            ret["result"] = False
            ret["comment"] = (f"the detector did not load {path} within {timeout} s "
                              f"(status: {st or 'none'}; see /var/log/mailfleet-watch.log)")
            return ret
        time.sleep(0.2)
    ret["comment"] = ("settings written, " if ret["changes"] else "settings as wanted, ") + \
        f"the detector (pid {st['pid']}) runs them"
    return ret
