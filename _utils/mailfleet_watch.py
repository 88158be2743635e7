"""
mailfleet_watch: the mail host's detector, a long-running program beside the salt-minion.

It follows the mail log (:class:`mailfleet_logtail.Tailer`: rotation and truncation safe,
offset saved across restarts), classifies and counts lines (``mailfleet_logparse.Scanner``,
``mailfleet_logcount.Aggregator``) and, once per
``interval``, emits at most ONE report, never one per line::

    tag  mailfleet/abuse/report
    data {"host": <minion id>, "interval": [start, end], "events": {kind: n},
          "offenders": [{"ip", "rules": {rule: n}, "kinds": {kind: n}, "services", "users"}],
          "outbound": [...], "deferred": n, "dropped": n, "untracked": n}

Threads of the same process check the host's sending addresses against DNSBLs
(``mailfleet/dnsbl/transition``, _utils/mailfleet_dnsbl_lookup.py), its certificates
(``mailfleet/cert/problem``, _utils/mailfleet_certcheck.py) and its queue (a ``queue`` part
on the abuse tag, _utils/mailfleet_postqueue.py).

How it runs, and why so (issue 12): the minion starts Salt's stock ``script`` engine with the
stanza in config/minion.d/mailfleet.conf (:data:`ENGINE_STANZA`). That engine exists on a bare
host before anything is synced, so the minion never has to restart to start the detector:
the engine's command waits for the launcher that mail.defense writes
(``<watch_dir>/run``), then runs it; every line the program prints on stdout,
``{"tag": ..., "data": ...}``, is fired to the master by the engine (``event.send``, through
the minion's own connection). mail.defense writes the settings file (JSON, 0600: it can hold
the DQS key); the program re-reads it within a second of a change and applies it in place
(thresholds keep their counts), and it exits when its own code changes, so the engine runs
the new code a second later. Either way the minion keeps answering. The program writes
``status.json`` (pid, digests of the settings and code it runs) after each load, which
mail.defense waits for: a highstate returns once the new settings are live.
"""
import contextvars
import hashlib
import json
import logging
import os
import sys
import threading
import time

# salt://_utils: on sys.path when this module loads (the launcher puts it there)
import mailfleet_files
import mailfleet_logcount
import mailfleet_logparse
import mailfleet_logtail

log = logging.getLogger("mailfleet_watch")

TAG = "mailfleet/abuse/report"
DNSBL_TAG = "mailfleet/dnsbl/transition"
# The modules this program runs, as a minion's extension_modules holds them (the launcher
# puts utils/ on sys.path): a change of any of them restarts the program.
CODE_MODULES = tuple(("utils", name) for name in (
    "mailfleet_watch", "mailfleet_address", "mailfleet_report", "mailfleet_files", "mailfleet_ledger",
    "mailfleet_logparse", "mailfleet_logcount", "mailfleet_logtail", "mailfleet_dnsbl_lookup",
    "mailfleet_certcheck", "mailfleet_postqueue"))
SETTINGS, STATUS, LAUNCHER = "settings.json", "status.json", "run"
# Written by mailfleet_sasl_hold.sync when the postmaster releases users: {"id", "users"}.
# The detector drops their counts and names the request in status.json ("forgot").
FORGET = "forget.json"
REPORT_KEY = "report.key"  # this host's report key, written by mail.defense (0600)
# The minion config stanza (config/minion.d/mailfleet.conf holds the same; a test compares).
DEFAULT_WATCH_DIR = "/var/lib/mailfleet/watch"
ENGINE_STANZA = {"mailfleet_watch": {
    "engine_module": "script", "output": "json", "interval": 1,
    "cmd": "/bin/sh -c 'while [ ! -x {d}/{l} ]; do sleep 1; done; exec {d}/{l}'".format(
        d=DEFAULT_WATCH_DIR, l=LAUNCHER)}}


class DnsblWatcher:
    """One DNSBL round per ``interval``: the host's sending addresses against every zone,
    zones self-tested, transitions only (mailfleet_dnsbl_lookup.Tracker)."""

    def __init__(self, bl, host, conf, addresses, lookup=None):
        self.bl, self.host = bl, host
        self.conf = bl.settings(conf)
        self.addresses = addresses  # callable: candidate addresses of this host, now
        self.lookup = lookup or bl.make_lookup(self.conf["resolvers"], self.conf["timeout"])
        self.tracker = bl.Tracker()
        self.refreshed = time.monotonic()

    def ips(self):
        return self.bl.sending_ips(self.conf["ips"] or self.addresses())

    def round(self, mono=None):
        """The event to fire for this round, or None when nothing changed.

        Every ``refresh`` seconds the event also restates every known listed/clear verdict
        (``refresh: true``), so a transition the master missed (event lost, master down) is
        caught up: the master records them idempotently and acts only on a difference."""
        mono = time.monotonic() if mono is None else mono
        ips = self.ips()
        res = self.bl.check_round(ips, self.conf["zones"], self.lookup, self.conf["dqs_key"])
        trans = self.tracker.update(res["verdicts"])
        refresh = mono - self.refreshed >= self.conf["refresh"]
        if refresh:
            self.refreshed = mono
            seen = {(t["ip"], t["zone"]) for t in trans}
            for (ip, zone), state in sorted(self.tracker.last.items()):
                if (ip, zone) not in seen and state in ("listed", "clear"):
                    v = res["verdicts"][(ip, zone)]
                    trans.append({"ip": ip, "zone": zone, "state": self.bl.TRANSITION[state], "previous": state,
                                  "codes": list(v["codes"]), "why": v["why"], "initial": False, "refresh": True})
        if not trans:
            return None
        return {"host": self.host, "ips": ips, "zones": res["zones"], "transitions": trans, "refresh": refresh}

    def run(self, fire, stop=None):
        while not (stop and stop.is_set()):
            started = time.monotonic()
            try:
                ev = self.round()
                if ev is not None:
                    fire(ev, DNSBL_TAG)
                    log.info("mailfleet_watch: DNSBL %s", ", ".join(
                        f"{t['ip']} {t['zone']} {t['state']}" for t in ev["transitions"]))
            except Exception:  # noqa: BLE001
                log.exception("mailfleet_watch: DNSBL round failed")
            left = self.conf["interval"] - (time.monotonic() - started)
            if stop:
                stop.wait(max(1.0, left))
            else:
                time.sleep(max(1.0, left))


def _host_addresses():
    """The host's addresses now (salt.utils.network directly: the loader's __salt__ is not
    safe to use from this thread while the engine's own loop uses it)."""
    import salt.utils.network
    return list(salt.utils.network.ip_addrs()) + list(salt.utils.network.ip_addrs6())


class Watcher:
    """Tail + scan + aggregate; ``step(now)`` returns a report due at ``now`` or None."""

    def __init__(self, path, host, state_file=None, thresholds=None, max_ips=500, interval=1.0):
        self.host, self.state_file = host, state_file
        state = mailfleet_logtail.load_state(state_file) if state_file else None
        self.tailer = mailfleet_logtail.Tailer(path, state)
        self.scanner = mailfleet_logparse.Scanner()
        self.agg = mailfleet_logcount.Aggregator(thresholds, max_ips=max_ips, start=time.time())
        self.interval = float(interval)
        self.next_report = time.monotonic() + self.interval
        self.saved_at = float("-inf")
        self.tailer_path = path

    def save(self):
        if not self.state_file:
            return
        try:
            mailfleet_logtail.save_state(self.state_file, self.tailer.state or {})
        except OSError as exc:
            log.warning("mailfleet_watch: saving %s: %s", self.state_file, exc)

    def poll(self):
        data = self.tailer.read()
        if data:
            self.agg.add_all(self.scanner.scan(data))
        for note in self.tailer.notes:
            log.info("mailfleet_watch: %s %s", *note)
        return len(data)

    def due(self, mono):
        return mono >= self.next_report

    def report(self, now, mono):
        self.next_report = mono + self.interval
        rep = self.agg.report(now)
        if self.state_file and mono - self.saved_at >= 5:
            self.saved_at = mono
            self.save()
        if rep is None or not (rep["offenders"] or rep["outbound"]):
            return None
        rep["host"] = self.host
        return rep



def code_files(extmods):
    return [os.path.join(extmods, sub, f"{name}.py") for sub, name in CODE_MODULES]


def digest(paths):
    """sha256 over the files' contents (a missing file counts as empty)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.encode() + b"\0")
        try:
            with open(path, "rb") as fh:
                h.update(fh.read())
        except OSError:
            h.update(b"\0missing")
    return h.hexdigest()


def _stamp(paths):
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return out


def write_json(path, data, mode=0o600):
    """Atomic write: _utils/mailfleet_files.py."""
    mailfleet_files.write_json(path, data, mode=mode)


class Emitter:
    """Events out: one JSON line each on stdout, read by Salt's script engine; each signed
    with the host's report key (``key_path``, re-read when it changes) when there is one."""

    def __init__(self, out, key_path=None):
        self.out, self.lock = out, threading.Lock()
        self.key_path, self.key_stamp, self.key = key_path, None, None

    def _key(self):
        stamp = _stamp([self.key_path])
        if stamp != self.key_stamp:
            self.key_stamp = stamp
            try:
                with open(self.key_path, encoding="utf-8") as fh:
                    key = json.load(fh)
                self.key = key if isinstance(key, dict) and key.get("kid") and key.get("key") else None
            except (OSError, ValueError):
                self.key = None
            if self.key is None:
                log.warning("mailfleet_watch: no report key in %s: reports go unsigned (the master refuses them)",
                            self.key_path)
        return self.key

    def __call__(self, data, tag):
        key = self._key() if self.key_path else None
        if key is not None:
            import mailfleet_report
            data = mailfleet_report.sign(key, tag, data)
        line = json.dumps({"tag": tag, "data": data}, separators=(",", ":"))
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()
        return True


class _Thread:
    """A side thread (DNSBL, certificates, queue) that a settings change restarts."""

    def __init__(self, name):
        self.name, self.conf, self.stop, self.thread = name, None, None, None

    def set(self, conf, target):
        """Run ``target(stop)`` for ``conf`` (None: not at all); same conf: leave it running."""
        if conf == self.conf and (conf is None or self.thread.is_alive()):
            return False
        if self.stop is not None:
            self.stop.set()
        self.conf, self.stop, self.thread = conf, None, None
        if conf is None:
            return True
        stop = threading.Event()
        # contextvars: any Salt loader globals a module reads are context variables
        ctx = contextvars.copy_context()
        th = threading.Thread(target=ctx.run, args=(target, stop), name=f"mailfleet_{self.name}", daemon=True)
        th.start()
        self.stop, self.thread = stop, th
        return True


class Detector:
    """The program: settings loaded and re-loaded, the log loop, the side threads."""

    def __init__(self, watch_dir, extmods, fire, mods=None):
        self.mods = mods or {}
        self.dir = watch_dir
        self.settings_path = os.path.join(watch_dir, SETTINGS)
        self.status_path = os.path.join(watch_dir, STATUS)
        self.code = code_files(extmods) if extmods else []
        self.code_stamp, self.code_digest = _stamp(self.code), digest(self.code)
        self.fire = fire
        self.conf, self.settings_stamp, self.settings_digest = None, None, None
        self.forget_path = os.path.join(watch_dir, FORGET)
        # a request older than this program is moot: its counts died with the last one
        self.forget_stamp, self.forgot = _stamp([self.forget_path]), None
        self.watcher, self.poll = None, 0.1
        self.threads = {n: _Thread(n) for n in ("dnsbl", "certs", "queue")}

    def _mod(self, name):
        if name not in self.mods:
            self.mods[name] = __import__(name)
        return self.mods[name]

    # settings ----------------------------------------------------------------------------
    def reload(self):
        """Apply the settings file if it changed; True when (re)loaded."""
        stamp = _stamp([self.settings_path])
        if stamp == self.settings_stamp:
            return False
        self.settings_stamp = stamp
        try:
            with open(self.settings_path, "rb") as fh:
                raw = fh.read()
            conf = json.loads(raw)
            if not isinstance(conf, dict) or not conf.get("host"):
                raise ValueError("not a mapping with a host")
        except (OSError, ValueError) as exc:
            if self.conf is None:
                log.info("mailfleet_watch: waiting for %s (%s)", self.settings_path, exc)
            else:
                log.error("mailfleet_watch: %s unreadable, keeping the settings in force: %s", self.settings_path, exc)
            return False
        sha = hashlib.sha256(raw).hexdigest()
        if sha == self.settings_digest:
            return False
        try:
            self._apply(conf)
        except Exception:  # noqa: BLE001
            log.exception("mailfleet_watch: settings in %s refused, keeping the ones in force", self.settings_path)
            return False
        self.conf, self.settings_digest = conf, sha
        self.write_status()
        return True

    def _apply(self, conf):
        host = conf["host"]
        path = conf.get("log") or "/var/log/mail.log"
        thresholds, max_ips = conf.get("thresholds") or {}, int(conf.get("max_ips", 500))
        mailfleet_logcount.merge_thresholds(thresholds)  # refuse bad ones before anything changes
        state_file = conf.get("state_file") or os.path.join(self.dir, "tail.state")
        w = self.watcher
        if w is None or w.tailer_path != path or w.host != host or w.state_file != state_file:
            if w is not None:
                w.save()
            w = Watcher(path, host, state_file, thresholds, max_ips, float(conf.get("interval", 0.5)))
            w.tailer_path = path
            log.info("mailfleet_watch: following %s, report every %ss to %s", path, w.interval, TAG)
        else:
            # counts in the window are kept: a threshold lowered mid-attack bans at once
            w.agg.rules = mailfleet_logcount.merge_thresholds(thresholds)
            w.agg.max_ips = max_ips
            w.interval = float(conf.get("interval", 0.5))
        self.watcher = w
        self.poll = float(conf.get("poll", 0.1))
        self._side(host, conf)
        log.info("mailfleet_watch: settings loaded (thresholds %s)", json.dumps(thresholds, sort_keys=True))

    def _side(self, host, conf):
        dnsbl, certs, queue = conf.get("dnsbl"), conf.get("certs"), conf.get("queue")
        if dnsbl is not None:
            dw = DnsblWatcher(self._mod("mailfleet_dnsbl_lookup"), host, dnsbl, _host_addresses)
        if self.threads["dnsbl"].set(dnsbl, (lambda stop: dw.run(self.fire, stop)) if dnsbl is not None else None) \
                and dnsbl is not None:
            log.info("mailfleet_watch: DNSBL checks every %ss on %s", dw.conf["interval"],
                     ", ".join(z for z, _ in dw.conf["zones"]))
        if certs is not None:
            cw = self._mod("mailfleet_certcheck")
            cwatch = cw.Watcher(host, cw.settings(certs, host))
        if self.threads["certs"].set(certs, (lambda stop: cwatch.run(self.fire, stop)) if certs is not None else None) \
                and certs is not None:
            log.info("mailfleet_watch: certificates %s checked every %ss", cwatch.conf["lineages"],
                     cwatch.conf["interval"])
        if queue is not None:
            qw = self._mod("mailfleet_postqueue").QueueWatcher(queue)
        if self.threads["queue"].set(queue, (lambda stop: qw.run(host, self.fire, TAG, stop, log=log))
                                     if queue is not None else None) and queue is not None:
            log.info("mailfleet_watch: queue checked every %ss (deferred %s, age %ss)", qw.conf["interval"],
                     qw.conf["deferred"], qw.conf["age"])

    def forget(self):
        """Apply a new forget request; True when one was applied."""
        stamp = _stamp([self.forget_path])
        if stamp == self.forget_stamp:
            return False
        self.forget_stamp = stamp
        try:
            with open(self.forget_path, encoding="utf-8") as fh:
                req = json.load(fh)
            users = [u for u in req["users"] if isinstance(u, str)]
            rid = str(req["id"])[:64]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("mailfleet_watch: %s unreadable: %s", self.forget_path, exc)
            return False
        known = self.watcher.agg.forget_users(users) if self.watcher is not None else 0
        log.info("mailfleet_watch: released users forgotten (%d counted): %s", known, ", ".join(users[:20]))
        self.forgot = rid
        self.write_status()
        return True

    def write_status(self):
        try:
            write_json(self.status_path, {"pid": os.getpid(), "settings": self.settings_digest,
                                          "code": self.code_digest, "loaded": time.time(),
                                          "forgot": self.forgot}, 0o644)
        except OSError as exc:
            log.warning("mailfleet_watch: %s: %s", self.status_path, exc)

    def code_changed(self):
        stamp = _stamp(self.code)
        if stamp == self.code_stamp:
            return False
        self.code_stamp = stamp
        return digest(self.code) != self.code_digest

    # the loop ----------------------------------------------------------------------------
    def run(self, parent=None, max_seconds=None):
        """Until the code changes (returns 0: run me again), the parent goes away or
        ``max_seconds`` pass (tests)."""
        ended = None if max_seconds is None else time.monotonic() + max_seconds
        next_check = 0.0
        while ended is None or time.monotonic() < ended:
            mono = time.monotonic()
            if mono >= next_check:
                next_check = mono + 1.0
                if parent is not None and os.getppid() != parent:
                    log.info("mailfleet_watch: the engine that started me is gone: exiting")
                    break
                if self.code_changed():
                    log.info("mailfleet_watch: my code changed: exiting, the engine starts the new code")
                    break
                self.reload()
                self.forget()
            w = self.watcher
            if w is None:
                time.sleep(0.5)
                continue
            try:
                w.poll()
                mono = time.monotonic()
                if w.due(mono):
                    rep = w.report(time.time(), mono)
                    if rep is not None:
                        self.fire(rep, TAG)
                        log.info("mailfleet_watch: reported %d offenders", len(rep["offenders"]))
            except BrokenPipeError:
                raise
            except Exception:  # noqa: BLE001
                log.exception("mailfleet_watch: loop error")
                time.sleep(1)
            time.sleep(self.poll)
        for t in self.threads.values():
            t.set(None, None)
        if self.watcher is not None:
            self.watcher.save()
        return 0


def main(watch_dir=DEFAULT_WATCH_DIR, extmods=None, log_file=None):
    """Entry point of the launcher mail.defense writes. stdout belongs to the engine (JSON
    lines only), so logging and anything Python writes to stderr go to ``log_file``
    (default /var/log/mailfleet-watch.log, or $MAILFLEET_WATCH_LOG)."""
    import fcntl
    log_file = log_file or os.environ.get("MAILFLEET_WATCH_LOG", "/var/log/mailfleet-watch.log")
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    try:
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.dup2(fd, 2)
        os.close(fd)
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # a stray print must never reach the engine's JSON reader
    os.close(devnull)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s [%(process)d] %(levelname)s %(message)s")
    os.makedirs(watch_dir, mode=0o700, exist_ok=True)
    lock = open(os.path.join(watch_dir, "lock"), "w")
    # One detector per host: one left by a minion that stopped exits within a second
    # (its parent is gone); wait for it rather than read the log twice.
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        det = Detector(watch_dir, extmods, Emitter(out, os.path.join(watch_dir, REPORT_KEY)))
        return det.run(parent=os.getppid())
    except BrokenPipeError:
        return 0
