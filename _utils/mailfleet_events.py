"""
What the master-side runners say: a Salt event on the master bus, and an alert through the
``mailfleet_alert`` runner (webhook, mail, event; deduplicated there). An alert that cannot
be sent is logged, never raised: the reaction it reports has already happened.
"""
import logging

__virtualname__ = "mailfleet_events"

log = logging.getLogger(__name__)


def __virtual__():
    return __virtualname__


def fire(opts, tag, data):
    """Fire ``data`` on the master's event bus under ``tag``."""
    import salt.utils.event
    with salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=False) as ev:
        ev.fire_event(data, tag)


def alert(runners, source, kind, subject, message, details=None, severity="warning"):
    """``mailfleet_alert.send`` through the caller's ``__salt__`` (its runners); the alert's
    ledger row, or None when it failed (logged under ``source``)."""
    try:
        return runners["mailfleet_alert.send"](kind, subject, message, details=details, severity=severity)
    except Exception:  # noqa: BLE001
        log.exception("%s: alert %s/%s failed", source, kind, subject)
        return None


def refuse_report(runners, fire, source, what, tag, refused_tag, sender, why):
    """A report the master will not act on (issue 13): logged, fired on ``refused_tag`` (the
    runner's ``fire``) and alerted as ``report_refused``, named for the minion Salt gave as
    its sender (for a batched event that may be absent or forged: the message says so).
    Returns the runner's answer."""
    log.warning("%s: refused %s from %r: %s", source, what, sender, why)
    fire(refused_tag, {"minion": sender, "why": str(why)})
    name = str(sender)[:255] if sender else "unknown sender"
    alert(runners or {}, source, "report_refused", name,
          f"a report on {tag} from {name} was refused: {str(why)[:300]}",
          {"host": name, "tag": tag, "why": str(why)[:300]}, "critical")
    return {"refused": str(why)}
