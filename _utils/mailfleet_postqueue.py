"""
The Postfix queue as seen by ``postqueue -j``: pure functions plus one bounded reader; no
Salt imports, so the mailfleet_watch detector, the execution modules ``mailfleet_queue`` and
``mailfleet_sasl_hold`` and the unit tests import it plainly (Salt puts the utils
directories on ``sys.path``).

- :func:`read_queue`: runs ``postqueue -j`` with a time limit and reads at most ``max_lines``
  messages (a queue of a million messages must not stall the engine or eat its memory); the
  result says whether it was cut short.
- :func:`summary`: deferred count, oldest deferred age, held count.
- :func:`ids_of_senders`: queue ids of the messages whose envelope sender is one of the
  given addresses (case-insensitive), optionally only in some queues.
- :class:`QueueWatcher`: one check per round against thresholds (pillar
  ``mailfleet:defense:queue: {deferred: 200, age: 14400, interval: 60, repeat: 3600}``);
  returns a report when the queue goes past a threshold, again every ``repeat`` seconds
  while it stays there, and once when it is back under (``state``: over / cleared).
"""
import json
import os
import subprocess
import time

__virtualname__ = "mailfleet_postqueue"

QUEUE_DEFAULTS = {"deferred": 200, "age": 14400, "interval": 60, "repeat": 3600,
                  "max_lines": 100_000, "timeout": 20}
POSTQUEUE_PATHS = ("/usr/sbin/postqueue", "/usr/local/sbin/postqueue")


def __virtual__():
    return __virtualname__


def queue_settings(conf=None):
    """QUEUE_DEFAULTS with pillar ``mailfleet:defense:queue`` merged in; errors name the key."""
    out = dict(QUEUE_DEFAULTS)
    if conf is None:
        return out
    if not isinstance(conf, dict):
        raise ValueError("pillar mailfleet:defense:queue must be a mapping")
    for key, value in conf.items():
        if key not in out:
            raise ValueError(f"pillar mailfleet:defense:queue:{key}: unknown setting "
                             f"(known: {', '.join(sorted(out))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"pillar mailfleet:defense:queue:{key}: {value!r} is not a positive number")
        out[key] = value
    return out


def parse_lines(lines, max_lines=QUEUE_DEFAULTS["max_lines"]):
    """Messages (dicts) from postqueue -j output lines; (messages, truncated, bad lines)."""
    msgs, bad, truncated = [], 0, False
    for line in lines:
        if isinstance(line, bytes):
            line = line.decode("utf-8", "replace")
        line = line.strip()
        if not line:
            continue
        if len(msgs) >= max_lines:
            truncated = True
            break
        try:
            m = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(m, dict) and isinstance(m.get("queue_id"), str):
            msgs.append(m)
        else:
            bad += 1
    return msgs, truncated, bad


def postqueue_path():
    for p in POSTQUEUE_PATHS:
        if os.path.exists(p):
            return p
    return "postqueue"


def read_queue(max_lines=QUEUE_DEFAULTS["max_lines"], timeout=QUEUE_DEFAULTS["timeout"], argv=None):
    """(messages, truncated) from ``postqueue -j``, bounded in lines and seconds.

    Raises RuntimeError when postqueue fails (mail system down: not an empty queue)."""
    argv = argv or [postqueue_path(), "-j"]
    deadline = time.monotonic() + timeout
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines, truncated = [], False
    try:
        for line in proc.stdout:
            if len(lines) >= max_lines or time.monotonic() > deadline:
                truncated = True
                break
            lines.append(line)
    finally:
        if truncated:
            proc.kill()
        try:
            _out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            truncated = True
    if not truncated and proc.returncode != 0:
        raise RuntimeError(f"postqueue -j failed ({proc.returncode}): {err.decode(errors='replace')[:300]}")
    msgs, cut, _bad = parse_lines(lines, max_lines)
    return msgs, truncated or cut


def summary(msgs, now):
    """{"deferred", "oldest" (seconds, deferred only), "hold", "total"}."""
    deferred = [m for m in msgs if m.get("queue_name") == "deferred"]
    times = [m["arrival_time"] for m in deferred
             if isinstance(m.get("arrival_time"), (int, float)) and not isinstance(m.get("arrival_time"), bool)]
    return {"deferred": len(deferred), "oldest": int(max(0, now - min(times))) if times else 0,
            "hold": sum(1 for m in msgs if m.get("queue_name") == "hold"), "total": len(msgs)}


def ids_of_senders(msgs, senders, queues=None):
    """Queue ids whose envelope sender is one of ``senders`` (case-insensitive)."""
    want = {s.lower() for s in senders}
    return sorted(m["queue_id"] for m in msgs
                  if str(m.get("sender", "")).lower() in want
                  and (queues is None or m.get("queue_name") in queues))


class QueueWatcher:
    """Transitions of the queue against the thresholds; ``round(msgs, now)`` -> report or None."""

    def __init__(self, conf=None):
        self.conf = queue_settings(conf)
        self.over = False
        self.last = float("-inf")

    def round(self, msgs, now, truncated=False):
        s = summary(msgs, now)
        s["truncated"] = bool(truncated)
        over = s["deferred"] >= self.conf["deferred"] or s["oldest"] >= self.conf["age"]
        s["thresholds"] = {"deferred": self.conf["deferred"], "age": self.conf["age"]}
        if over:
            if not self.over or now - self.last >= self.conf["repeat"]:
                self.over, self.last = True, now
                s["state"] = "over"
                return s
            return None
        if self.over:
            self.over = False
            s["state"] = "cleared"
            return s
        return None

    def run(self, host, fire, tag, stop=None, reader=read_queue, log=None):
        """The engine's queue thread: one round per ``interval``; a report goes to the master
        as ``{"host", "offenders": [], "outbound": [], "queue": {...}}`` on ``tag`` (the abuse
        report's: the same reactor and runner, no extra mapping)."""
        while not (stop and stop.is_set()):
            started = time.monotonic()
            try:
                msgs, truncated = reader(self.conf["max_lines"], self.conf["timeout"])
                rep = self.round(msgs, time.time(), truncated)
                if rep is not None:
                    fire({"host": host, "offenders": [], "outbound": [], "queue": rep}, tag)
                    if log:
                        log.info("mailfleet_watch: queue %s: %d deferred, oldest %ss", rep["state"],
                                 rep["deferred"], rep["oldest"])
            except Exception:  # noqa: BLE001
                if log:
                    log.exception("mailfleet_watch: queue check failed")
            left = max(1.0, self.conf["interval"] - (time.monotonic() - started))
            if stop:
                stop.wait(left)
            else:
                time.sleep(left)
