"""
Certificate reaction, the pure side (the mailfleet_certs runner's): the check of one
``mailfleet/cert/problem`` event (bounded, about lineages the sender's own pillar names),
the action its problems call for (renew, reload, or an alert only), the cooldown between
two attempts, and the verdict of the re-probe after an action. No Salt: imported plainly
(Salt puts the utils directories on ``sys.path``).
"""
import re

import mailfleet_report  # the envelope every report shares

__virtualname__ = "mailfleet_cert_policy"


def __virtual__():
    return __virtualname__


MAX_EVENT_BYTES = 64 << 10


MAX_LINEAGES = 20


NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


PROBLEM_RE = re.compile(r"^(expiring|missing|(stale|unreachable):[0-9]{1,5})$")


class Refused(ValueError):
    pass


def check_event(payload, sender, lineages):
    """[{name, problems, disk_serial}] of one event, or raise Refused.

    ``lineages``: the lineage names the master allows for the sending minion."""
    mailfleet_report.check_envelope(payload, sender, MAX_EVENT_BYTES, Refused)
    items = payload.get("lineages")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_LINEAGES:
        raise Refused(f"lineages must be a list of 1 to {MAX_LINEAGES}")
    out = []
    for it in items:
        if not isinstance(it, dict):
            raise Refused("a lineage is not a mapping")
        name = it.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise Refused(f"bad lineage name {str(name)[:100]!r}")
        if name not in lineages:
            raise Refused(f"lineage {name!r} is not one of {sender}'s ({', '.join(sorted(lineages))})")
        probs = it.get("problems")
        if not isinstance(probs, list) or len(probs) > 32 or not all(isinstance(p, str) and PROBLEM_RE.match(p) for p in probs):
            raise Refused(f"bad problems for {name}: {str(probs)[:100]}")
        disk = it.get("disk") if isinstance(it.get("disk"), dict) else {}
        serial = disk.get("serial")
        serial = serial if isinstance(serial, str) and re.fullmatch(r"[0-9A-F]{1,64}", serial) else None
        served = it.get("served") if isinstance(it.get("served"), dict) else {}
        stale = sorted({v.get("serial") for v in list(served.values())[:16] if isinstance(v, dict)
                        and isinstance(v.get("serial"), str) and re.fullmatch(r"[0-9A-F]{1,64}", v["serial"])
                        and v["serial"] != serial})
        out.append({"name": name, "problems": sorted(set(probs)), "disk_serial": serial,
                    "served_serials": stale[:4], "report": str(it.get("report") or "")[:20]})
    return out


def decide(problems):
    """The action for a lineage's problems: 'renew', 'reload' or None (alert only / nothing)."""
    if "expiring" in problems or "missing" in problems:
        return "renew"
    if any(p.startswith("stale:") for p in problems):
        return "reload"
    return None


def cooled(last_time, now, cooldown):
    """May we try again? (no attempt yet, or the last one is ``cooldown`` seconds old)"""
    return last_time is None or now - last_time >= float(cooldown)


def verdict(action, old_serial, status, threshold_days):
    """(ok, why) of the re-probe after an action (``status``: one lineage of
    mailfleet_certwatch.status)."""
    disk = status.get("disk") or {}
    if "serial" not in disk:
        return False, f"no certificate on disk: {disk.get('error')}"
    bad = [p for p in status.get("problems") or [] if not p.startswith("unreachable:")]
    if action == "renew" and old_serial and disk["serial"] == old_serial:
        return False, f"serial unchanged ({old_serial}): not renewed"
    if any(p.startswith("stale:") for p in bad):
        return False, "still served the old certificate on " + ", ".join(p[6:] for p in bad if p.startswith("stale:"))
    unreach = [p for p in status.get("problems") or [] if p.startswith("unreachable:")]
    if unreach:
        return False, "no TLS on " + ", ".join(p.split(":")[1] for p in unreach)
    if "expiring" in bad:
        return True, f"serial {disk['serial']} served, but {disk.get('days_left')} days left < threshold {threshold_days}"
    return True, f"serial {disk['serial']} served, {disk.get('days_left')} days left"
