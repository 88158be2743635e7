"""
mailfleet_watch: the minion engine that watches the mail log (issue 6, detection).

A long-running process (an engine, started and restarted by the salt-minion): it follows the
log with :class:`mailfleet_maillog.Tailer` (rotation and truncation safe, offset saved across
restarts), classifies lines with :class:`mailfleet_maillog.Scanner`, counts them in a
:class:`mailfleet_maillog.Aggregator` and, once per ``interval``, fires at most ONE event to
the master, never one per line::

    tag  mailfleet/abuse/report
    data {"host": <minion id>, "interval": [start, end], "events": {kind: n},
          "offenders": [{"ip", "rules": {rule: n}, "kinds": {kind: n}, "services", "users"}],
          "outbound": [...], "deferred": n, "dropped": n, "untracked": n}

bounded by the aggregator (``max_ips`` offenders per report, the rest carried over). The
master's abuse reactor hands it to the ``mailfleet_defense`` runner.

Configured by the mail formula (salt/mail/defense.sls writes /etc/salt/minion.d/mailfleet-
defense.conf from pillar ``mailfleet:defense``)::

    engines:
      - mailfleet_watch:
          log: /var/log/mail.log
          interval: 0.5          # seconds between reports
          poll: 0.1              # seconds between reads of the log
          thresholds: {relay: {count: 3, window: 600}, ...}   # see mailfleet_maillog
          max_ips: 500
          dnsbl: {zones: [...], interval: 300, timeout: 5, resolvers: [], ips: [], dqs_key: ""}

With ``dnsbl`` (pillar ``mailfleet:dnsbl``, see _modules/mailfleet_dnsbl.py), a thread of
this engine checks the host's sending addresses against the zones every ``interval`` seconds
through the host's resolver and fires ``mailfleet/dnsbl/transition`` on transitions only::

    data {"host": <minion id>, "ips": [...], "zones": {zone: {"ok", "why"}},
          "transitions": [{"ip", "zone", "state": listed|cleared|unknown, "previous",
                           "codes", "why", "initial"}]}

(the master's dnsbl reactor hands it to the ``mailfleet_reroute`` runner). The thread never
blocks the log loop: slow or failing DNS only delays the next DNSBL round.
"""
import contextvars
import importlib.util
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_watch"
TAG = "mailfleet/abuse/report"
DNSBL_TAG = "mailfleet/dnsbl/transition"


def __virtual__():
    return __virtualname__


def _maillog(name="mailfleet_maillog"):
    """The detection core, imported from wherever the loader found our modules."""
    if name in sys.modules:
        return sys.modules[name]
    here = os.path.dirname(os.path.abspath(__file__))
    cands = [os.path.join(here, "..", "modules"), os.path.join(here, "..", "_modules")]
    ext = __opts__.get("extension_modules")  # noqa: F821
    if ext:
        cands.insert(0, os.path.join(ext, "modules"))
    for d in cands:
        path = os.path.join(d, f"{name}.py")
        if os.path.exists(path):
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            return mod
    raise ImportError(f"{name}.py not found (saltutil.sync_modules?)")


class DnsblWatcher:
    """One DNSBL round per ``interval``: the host's sending addresses against every zone,
    zones self-tested, transitions only (mailfleet_dnsbl.Tracker)."""

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
            except Exception:  # pylint: disable=broad-except
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

    def __init__(self, ml, path, host, state_file=None, thresholds=None, max_ips=500, interval=1.0):
        self.ml, self.host, self.state_file = ml, host, state_file
        state = ml.load_state(state_file) if state_file else None
        self.tailer = ml.Tailer(path, state)
        self.scanner = ml.Scanner()
        self.agg = ml.Aggregator(thresholds, max_ips=max_ips, start=time.time())
        self.interval = float(interval)
        self.next_report = time.monotonic() + self.interval
        self.saved_at = float("-inf")

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
            try:
                self.ml.save_state(self.state_file, self.tailer.state or {})
            except OSError as exc:
                log.warning("mailfleet_watch: saving %s: %s", self.state_file, exc)
        if rep is None or not (rep["offenders"] or rep["outbound"]):
            return None
        rep["host"] = self.host
        return rep


_FIRE_LOCK = threading.Lock()


def _start_certwatch(host, certs):
    """Certificate thread (_modules/mailfleet_certwatch.py): days left on disk and what 25/587/993
    serve, mailfleet/cert/problem on changes (and every ``repeat`` while a problem lasts)."""
    try:
        cw = _maillog("mailfleet_certwatch")
        conf = cw.settings(certs, host)
        __salt__["event.fire_master"]  # noqa: F821  (loaded here, once, not in the thread)
        ctx = contextvars.copy_context()
        threading.Thread(target=ctx.run, args=(cw.Watcher(host, conf).run, _fire_master),
                         name="mailfleet_certwatch", daemon=True).start()
        log.info("mailfleet_watch: certificates %s checked every %ss (threshold %s days, ports %s)",
                 conf["lineages"], conf["interval"], conf["threshold_days"], sorted(conf["ports"]))
    except Exception:  # pylint: disable=broad-except
        log.exception("mailfleet_watch: certificate checks not started (pillar mailfleet:defense:cert_*)")


def _start_queuewatch(host, queue, tag):
    """Queue thread (_modules/mailfleet_queue.py, pillar mailfleet:defense:queue): postqueue -j
    (bounded) every ``interval``; a ``queue`` report when the deferred queue goes past the
    thresholds (again every ``repeat``) and when it is back under."""
    try:
        qw = _maillog("mailfleet_queue").QueueWatcher(queue)
        __salt__["event.fire_master"]  # noqa: F821  (loaded here, once, not in the thread)
        ctx = contextvars.copy_context()
        threading.Thread(target=ctx.run, args=(qw.run, host, _fire_master, tag), kwargs={"log": log},
                         name="mailfleet_queue", daemon=True).start()
        log.info("mailfleet_watch: queue checked every %ss (deferred %s, age %ss)", qw.conf["interval"],
                 qw.conf["deferred"], qw.conf["age"])
    except Exception:  # pylint: disable=broad-except
        log.exception("mailfleet_watch: queue checks not started (pillar mailfleet:defense:queue)")


def _fire_master(data, tag):
    with _FIRE_LOCK:
        return __salt__["event.fire_master"](data, tag)  # noqa: F821


def start(log_file="/var/log/mail.log", interval=0.5, poll=0.1, thresholds=None, max_ips=500,
          tag=TAG, state_file=None, dnsbl=None, certs=None, queue=None, **_ignored):
    ml = _maillog()
    host = __opts__["id"]  # noqa: F821
    if dnsbl is not None:
        try:
            dw = DnsblWatcher(_maillog("mailfleet_dnsbl"), host, dnsbl, _host_addresses)
            __salt__["event.fire_master"]  # noqa: F821  (loaded here, once, not in the thread)
            # Salt's loader globals (__salt__, __opts__) are context variables: the thread
            # runs in a copy of this context, or it would see none of them.
            ctx = contextvars.copy_context()
            threading.Thread(target=ctx.run, args=(dw.run, _fire_master), name="mailfleet_dnsbl",
                             daemon=True).start()
            log.info("mailfleet_watch: DNSBL checks of %s every %ss on %s", dw.ips(), dw.conf["interval"],
                     ", ".join(z for z, _ in dw.conf["zones"]))
        except Exception:  # pylint: disable=broad-except
            log.exception("mailfleet_watch: DNSBL checks not started (pillar mailfleet:dnsbl)")
    if certs is not None:
        _start_certwatch(host, certs)
    if queue is not None:
        _start_queuewatch(host, queue, tag)
    if state_file is None:
        state_file = os.path.join(__opts__.get("cachedir", "/var/cache/salt/minion"), "mailfleet_watch.state")  # noqa: F821
    log_file = _ignored.get("log", log_file)
    w = Watcher(ml, log_file, host, state_file, thresholds, int(max_ips), float(interval))
    log.info("mailfleet_watch: following %s, report every %ss to %s", log_file, interval, tag)
    while True:
        try:
            w.poll()
            mono = time.monotonic()
            if w.due(mono):
                rep = w.report(time.time(), mono)
                if rep is not None:
                    _fire_master(rep, tag)
                    log.info("mailfleet_watch: reported %d offenders", len(rep["offenders"]))
        except Exception:  # pylint: disable=broad-except
            log.exception("mailfleet_watch: loop error")
            time.sleep(1)
        time.sleep(float(poll))
