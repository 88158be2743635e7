"""
Certificate reaction (issue 6): the cert reactor hands every ``mailfleet/cert/problem`` event
(mailfleet_watch engine on a mail host, _utils/mailfleet_certcheck.py) to :func:`problem`.

1. :func:`check_event` (pure): the event is untrusted. Its ``host`` must be the minion that sent
   it (the ``id`` Salt put on the event) and a known mail host; each lineage name must be a DNS
   name and one of THAT host's lineages (its ``mailfleet:host:myhostname``, else its id, plus
   ``mailfleet:defense:cert_lineages`` from the master's pillar cache); problems must be of the
   known kinds; sizes are bounded. Anything else is refused (event ``mailfleet/cert/refused``).
2. :func:`decide` (pure): ``expiring`` or ``missing`` -> ``renew`` (certbot renew --cert-name
   <name> --force-renewal on that host, then reload); ``stale:<port>`` only -> ``reload``;
   ``unreachable:<port>`` -> alert only. At most one attempt per host+lineage+action per
   ``cooldown`` (:func:`cooled`, from the ledger): no loops, whatever the host keeps reporting.
3. Acting (on the host, through its mailfleet_certwatch module): renew, reload postfix/dovecot
   (the certbot deploy hook of mail.tls reloads too), then re-probe what 25/587/993 serve
   (a few tries over ``probe_wait`` seconds). Success = every port serves the file on disk and
   the file has at least ``threshold_days`` left (for a renewal: a new serial).
4. Ledger (same sqlite file as bans/listings, ``mailfleet_ledger``), table ``cert_actions``:
   host, lineage, action, reason, reporter, time, old/new serial, result. :func:`history`
   lists it; :func:`clear` lifts the cooldown of a host (postmaster, after fixing the cause).
5. Alerts through ``mailfleet_alert.send``: ``cert_renewed`` / ``cert_reloaded`` (info),
   ``cert_failed`` (critical), ``cert_unreachable`` (warning), ``cert_cooldown`` (warning:
   still failing and no attempt allowed yet).

Master config (defaults)::

    mailfleet_certs:
      cooldown: 21600        # seconds between two attempts of the same action on a lineage
      timeout: 300           # seconds for certbot on the host
      probe_wait: 30         # seconds to wait for the reloaded services to serve the new cert
"""
import logging
import threading
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_events
import mailfleet_ledger
import mailfleet_cert_policy as _policy  # the event check, the action, the cooldown, the verdict
import mailfleet_report

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_certs"

TAG_REFUSED = "mailfleet/cert/refused"
TAG_PROBLEM = "mailfleet/cert/problem"
DEFAULTS = {"cooldown": 21600, "timeout": 300, "probe_wait": 30}
_LOCK = threading.Lock()


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("problem", "history", "clear")


def __virtual__():
    return __virtualname__


# --- pure ----------------------------------------------------------------------------------


class Ledger(mailfleet_ledger.Tables):
    SCHEMA = """
    CREATE TABLE IF NOT EXISTS cert_actions (
        id INTEGER PRIMARY KEY AUTOINCREMENT, host TEXT NOT NULL, lineage TEXT NOT NULL,
        action TEXT NOT NULL, reason TEXT NOT NULL, reporter TEXT NOT NULL, time REAL NOT NULL,
        old_serial TEXT, new_serial TEXT, ok INTEGER, result TEXT, cleared INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX IF NOT EXISTS cert_actions_key ON cert_actions(host, lineage, action, time);
    """

    def last_attempt(self, host, lineage, action):
        row = self.db.execute("SELECT MAX(time) FROM cert_actions WHERE host=? AND lineage=? AND action=?"
                              " AND cleared=0", (host, lineage, action)).fetchone()
        return row[0]

    def claim(self, host, lineage, action, reason, reporter, now, old_serial, cooldown):
        """Record an attempt if the cooldown allows it (atomically): its row id, or None."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if not _policy.cooled(self.last_attempt(host, lineage, action), now, cooldown):
                self.db.execute("COMMIT")
                return None
            cur = self.db.execute("INSERT INTO cert_actions(host, lineage, action, reason, reporter, time, old_serial)"
                                  " VALUES (?,?,?,?,?,?,?)", (host, lineage, action, reason, reporter, now, old_serial))
            self.db.execute("COMMIT")
            return cur.lastrowid
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def finish(self, rid, ok, new_serial, result):
        self.db.execute("UPDATE cert_actions SET ok=?, new_serial=?, result=? WHERE id=?",
                        (1 if ok else 0, new_serial, str(result)[:2000], rid))

    def rows(self, since=0):
        return [dict(r) for r in self.db.execute("SELECT * FROM cert_actions WHERE time>=? ORDER BY id", (since,))]

    def clear(self, host, lineage=None):
        q, args = "UPDATE cert_actions SET cleared=1 WHERE host=?", [host]
        if lineage:
            q, args = q + " AND lineage=?", args + [lineage]
        return self.db.execute(q, args).rowcount


# --- Salt glue -----------------------------------------------------------------------------

def _conf():
    conf = dict(DEFAULTS)
    conf.update(__opts__.get("mailfleet_certs") or {})
    return conf


def _ledger_path():
    return mailfleet_ledger.path(__opts__)


def host_lineages(minion, pillar):
    mf = (pillar or {}).get("mailfleet") or {}
    names = [((mf.get("host") or {}).get("myhostname")) or minion]
    names += list(((mf.get("defense") or {}).get("cert_lineages")) or [])
    return [n for n in names if isinstance(n, str)]


def _pillar(minion):
    import salt.cache
    p = salt.cache.Cache(__opts__).fetch("pillar", minion)
    return p if isinstance(p, dict) and isinstance(p.get("mailfleet"), dict) else None


def _client():
    import salt.client
    return salt.client.get_local_client(mopts=__opts__)


def _call(host, fun, arg=(), kwarg=None, timeout=120):
    ret = _client().cmd([host], fun, arg=list(arg), kwarg=kwarg or {}, tgt_type="list", timeout=int(timeout))
    if host not in ret:
        raise RuntimeError(f"{host} did not answer {fun}")
    res = ret[host]
    if isinstance(res, str) and ("Traceback" in res or "is not available" in res or res.startswith("ERROR")):
        raise RuntimeError(f"{fun} on {host}: {res[-500:]}")
    return res


def _alert(kind, subject, message, details=None, severity="warning"):
    return mailfleet_events.alert(__salt__, "mailfleet_certs", kind, subject, message, details, severity)


def _fire(tag, data):
    mailfleet_events.fire(__opts__, tag, data)


def _reprobe(host, name, action, old_serial, conf, threshold):
    """Ask the host what it serves until it is right or probe_wait has passed."""
    deadline = time.monotonic() + float(conf["probe_wait"])
    while True:
        st = _call(host, "mailfleet_certwatch.status", [name], timeout=120)
        lin = (st.get("lineages") or [{}])[0] if isinstance(st, dict) else {}
        ok, why = _policy.verdict(action, old_serial, lin, threshold)
        if ok or time.monotonic() > deadline:
            return ok, why, lin
        time.sleep(3)


def _act(host, name, action, old_serial, conf, threshold):
    steps = {}
    if action == "renew":
        res = _call(host, "mailfleet_certwatch.renew", [name], {"timeout": int(conf["timeout"])},
                    timeout=int(conf["timeout"]) + 60)
        steps["certbot"] = res
        if not isinstance(res, dict) or res.get("retcode") != 0:
            return False, f"certbot renew failed: {str((res or {}).get('output') if isinstance(res, dict) else res)[-600:]}", {}, steps
    steps["reload"] = _call(host, "mailfleet_certwatch.reload", timeout=120)
    ok, why, lin = _reprobe(host, name, action, old_serial, conf, threshold)
    return ok, why, lin, steps


def problem(minion=None, payload=None):
    """
    Decide on one mailfleet/cert/problem event (the cert reactor calls this with the raw event).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_certs.problem mail01.lab.test '{...}'  # what reactor/cert.sls does
    """
    conf = _conf()
    now = time.time()
    try:
        # the signature names the sender; the event's minion id proves nothing (issue 13)
        minion, payload = mailfleet_report.check(__opts__, _ledger_path(), TAG_PROBLEM, payload, minion)
    except mailfleet_report.Refused as exc:
        return mailfleet_events.refuse_report(globals().get("__salt__"), _fire, "mailfleet_certs", "certificate event",
                                              TAG_PROBLEM, TAG_REFUSED, minion, exc)
    pillar = _pillar(minion) if isinstance(minion, str) else None
    try:
        if pillar is None:
            raise _policy.Refused(f"{str(minion)[:100]!r} is not a known mail host")
        items = _policy.check_event(payload, minion, host_lineages(minion, pillar))
    except _policy.Refused as exc:
        log.warning("mailfleet_certs: refused certificate event from %r: %s", minion, exc)
        _fire(TAG_REFUSED, {"minion": minion, "why": str(exc)})
        return {"refused": str(exc)}
    threshold = payload.get("threshold_days") if isinstance(payload.get("threshold_days"), (int, float)) else 21
    log.info("mailfleet_certs: certificate event from %s: %s", minion,
             "; ".join(f"{i['name']} {','.join(i['problems']) or 'ok'}" for i in items))
    out = []
    for it in items:
        name, probs = it["name"], it["problems"]
        action = _policy.decide(probs)
        unreach = [p.split(":")[1] for p in probs if p.startswith("unreachable:")]
        if unreach:
            _alert("cert_unreachable", f"{minion} {name}",
                   f"{minion}: no TLS handshake on port(s) {', '.join(unreach)} (certificate {name})",
                   {"host": minion, "lineage": name, "ports": unreach})
        if action is None:
            out.append({"name": name, "action": None, "problems": probs})
            continue
        reason = f"{','.join(probs)} reported by {minion} ({it['report'] or 'event'})"
        with _LOCK:
            led = Ledger(_ledger_path())
            try:
                # the serial being replaced: on disk for a renewal, the one still served for a reload
                old = it["disk_serial"] if action == "renew" else ",".join(it["served_serials"]) or it["disk_serial"]
                rid = led.claim(minion, name, action, reason, minion, now, old, conf["cooldown"])
                last = led.last_attempt(minion, name, action)
            finally:
                led.close()
        if rid is None:
            log.info("mailfleet_certs: %s %s %s: cooldown (last attempt %s)", minion, name, action, last)
            _alert("cert_cooldown", f"{minion} {name}",
                   f"{minion}: certificate {name} still {','.join(probs)}; {action} was tried "
                   f"{int(now - last)} s ago, next attempt allowed after {int(conf['cooldown'])} s",
                   {"host": minion, "lineage": name, "action": action, "problems": probs})
            out.append({"name": name, "action": action, "skipped": "cooldown"})
            continue
        try:
            ok, why, lin, _steps = _act(minion, name, action, it["disk_serial"], conf, threshold)
        except Exception as exc:  # noqa: BLE001
            ok, why, lin, _steps = False, f"{type(exc).__name__}: {exc}"[:600], {}, {}
        new_serial = (lin.get("disk") or {}).get("serial") if isinstance(lin, dict) else None
        led = Ledger(_ledger_path())
        try:
            led.finish(rid, ok, new_serial, why)
        finally:
            led.close()
        details = {"host": minion, "lineage": name, "action": action, "problems": probs,
                   "old_serial": old, "new_serial": new_serial, "served": lin.get("served") if lin else None}
        if ok:
            log.info("mailfleet_certs: %s %s %s: %s", minion, name, action, why)
            _alert(f"cert_{'renewed' if action == 'renew' else 'reloaded'}", f"{minion} {name}",
                   f"{minion}: certificate {name} {action}ed ({reason}): {why}",
                   details, "info")
        else:
            log.warning("mailfleet_certs: %s %s %s failed: %s", minion, name, action, why)
            _alert("cert_failed", f"{minion} {name}",
                   f"{minion}: {action} of certificate {name} failed ({reason}): {why}", details, "critical")
        out.append({"name": name, "action": action, "ok": ok, "result": why, "old_serial": old,
                    "new_serial": new_serial})
    return {"host": minion, "lineages": out}


def history(hours=24 * 30):
    """
    The ledger's renewals and reloads of the last ``hours``.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_certs.history hours=48
    """
    led = Ledger(_ledger_path())
    try:
        rows = led.rows(time.time() - float(hours) * 3600)
    finally:
        led.close()
    for r in rows:
        r["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["time"]))
    return rows


def clear(host, lineage=None):
    """
    Lift the cooldown of a host's lineage(s) (the attempts stay in the ledger, marked cleared).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_certs.clear mail01.lab.test
    """
    led = Ledger(_ledger_path())
    try:
        return {"cleared": led.clear(host, lineage)}
    finally:
        led.close()
