"""
This mail host's Postfix queue, on demand: the summary the mailfleet_watch detector's queue
thread checks against pillar ``mailfleet:defense:queue`` every ``interval``. The reader and
the thresholds are ``_utils/mailfleet_postqueue.py`` (imported plainly: Salt puts the utils
directories on ``sys.path``).
"""
import time

import mailfleet_postqueue as _postqueue

__virtualname__ = "mailfleet_queue"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("queue_settings", "status")


def __virtual__():
    return __virtualname__


def queue_settings(conf=None):
    """
    The queue thresholds: the defaults with ``conf`` (pillar ``mailfleet:defense:queue``)
    merged in, checked; a ValueError names the pillar key. mail.defense calls it before it
    writes the detector's settings.

    CLI Example::

        salt mail01.lab.test mailfleet_queue.queue_settings '{"deferred": 500}'
    """
    return _postqueue.queue_settings(conf)


def status():
    """
    The queue now: messages deferred, the oldest deferred one's age in seconds, messages
    held, whether the read was cut short (at ``max_lines`` messages), and the thresholds of
    pillar ``mailfleet:defense:queue`` it is checked against.

    CLI Example::

        salt '*mail*' mailfleet_queue.status
    """
    conf = _postqueue.queue_settings((__salt__["pillar.get"]("mailfleet:defense", {}) or {}).get("queue") or None)
    msgs, truncated = _postqueue.read_queue(conf["max_lines"], conf["timeout"])
    out = _postqueue.summary(msgs, time.time())
    out["truncated"] = bool(truncated)
    out["thresholds"] = {"deferred": conf["deferred"], "age": conf["age"]}
    return out
