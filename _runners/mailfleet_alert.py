"""
Alerts from the fleet's reactions (issue 6): one call, three channels, deduplicated and
rate-limited.

    __salt__["mailfleet_alert.send"](kind, subject, message, details={...}, severity="warning")
    salt-run mailfleet_alert.send test mail01.lab.test "hello"      # by hand
    salt-run mailfleet_alert.recent                                  # what was sent/suppressed

Channels, each optional and independent (one failing does not stop the others):

- a Salt event ``mailfleet/alert/<kind>`` on the master bus (always, unless throttled);
- a JSON POST to ``webhook`` (http/https; 5 s timeout);
- a mail to ``mail:to`` (the postmaster) through ``mail:relay`` (host[:port], default
  localhost:25), HELO ``mail:helo`` (default the master's id), from ``mail:from``.

Throttle (:class:`Throttle`, sqlite table ``alerts`` in the master's ledger file, so it
holds across the reactor's threads, runner CLIs and master restarts): at most ``burst`` (1)
alert per kind+subject per ``period`` (60 s), and at most ``kind_burst`` (10) per kind and
host (``details.host``) per period whatever the subjects (a storm of distinct subjects stays
a handful of alerts, and one host's storm cannot silence alerts about another). What
is held back is counted and reported in the next alert of that kind+subject
(``suppressed``), never silently lost; ``recent`` lists it.

Settings: master config ``mailfleet_alert`` merged with the YAML file ``mailfleet_alert_file``
(default ``<master config dir>/mailfleet-alert.conf``), which is re-read at every alert, so
the webhook or the postmaster address change without a master restart::

    mailfleet_alert:
      webhook: https://hooks.example.net/mailfleet
      mail: {to: postmaster@example.net, relay: "localhost:25", from: mailfleet@example.net}
      period: 60
      burst: 1
      kind_burst: 10
"""
import json
import logging
import os
import smtplib
import time
import urllib.request
from email.message import EmailMessage

import yaml

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_events
import mailfleet_ledger

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_alert"

DEFAULTS = {"webhook": None, "mail": {}, "period": 60, "burst": 1, "kind_burst": 10, "timeout": 5,
            "mail_timeout": 30}  # postscreen delays the greeting by up to 6 s
SEVERITIES = ("info", "warning", "critical")
MAX_FIELD = 200


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("send", "recent")


def __virtual__():
    return __virtualname__


# --- pure: settings, throttle --------------------------------------------------------------

def settings(conf=None, extra=None):
    """DEFAULTS < master config < file; checked (errors name the key)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULTS.items()}
    for src in (conf or {}, extra or {}):
        if not isinstance(src, dict):
            raise ValueError("mailfleet_alert must be a mapping")
        for k, v in src.items():
            if k not in out:
                raise ValueError(f"unknown mailfleet_alert setting {k!r}")
            out[k] = dict(v or {}) if k == "mail" else v
    for k in ("period", "burst", "kind_burst", "timeout", "mail_timeout"):
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"mailfleet_alert:{k}: {v!r} is not a positive number")
    hook = out["webhook"]
    if hook is not None and not (isinstance(hook, str) and hook.split("://")[0] in ("http", "https")):
        raise ValueError(f"mailfleet_alert:webhook: {hook!r} is not an http(s) URL")
    bad = set(out["mail"]) - {"to", "relay", "from", "helo"}
    if bad:
        raise ValueError(f"mailfleet_alert:mail: unknown keys {sorted(bad)}")
    return out


def clip(text, n=MAX_FIELD):
    text = str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


class Throttle(mailfleet_ledger.Tables):
    """Per kind+subject and per kind windows, in sqlite (``path``; ``:memory:`` in tests)."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, subject TEXT NOT NULL,
        created REAL NOT NULL, sent INTEGER NOT NULL, suppressed INTEGER NOT NULL DEFAULT 0,
        message TEXT NOT NULL, channels TEXT, reporter TEXT NOT NULL DEFAULT '');
    CREATE INDEX IF NOT EXISTS alerts_key ON alerts(kind, subject, created);
    """

    ROWS = False

    def __init__(self, path, period=60, burst=1, kind_burst=10):
        super().__init__(path)
        self.period, self.burst, self.kind_burst = period, int(burst), int(kind_burst)
        # ledgers written before the per-reporter budget: add its column once, checked again
        # inside the write lock (two reactor threads may both see it missing)
        if "reporter" not in self._columns():
            with self:
                if "reporter" not in self._columns():
                    self.db.execute("ALTER TABLE alerts ADD COLUMN reporter TEXT NOT NULL DEFAULT ''")

    def _columns(self):
        return {r[1] for r in self.db.execute("PRAGMA table_info(alerts)")}

    def decide(self, kind, subject, message, now, reporter=""):
        """(send, suppressed_before, row id): record this alert and say whether it goes out.

        ``suppressed_before``: alerts of this kind+subject held back since the last one sent
        (reported with this one when it is sent). The per-kind budget is per ``reporter``
        (the host an alert is about or came from; "" for the master's own), so one host
        flooding a kind cannot silence alerts about the others."""
        db = self.db
        reporter = str(reporter or "")[:255]
        db.execute("BEGIN IMMEDIATE")
        try:
            since = now - self.period
            same = db.execute("SELECT count(*) FROM alerts WHERE kind=? AND subject=? AND sent=1"
                              " AND created>?", (kind, subject, since)).fetchone()[0]
            per_kind = db.execute("SELECT count(*) FROM alerts WHERE kind=? AND reporter=? AND sent=1 AND created>?",
                                  (kind, reporter, since)).fetchone()[0]
            send = same < self.burst and per_kind < self.kind_burst
            held = 0
            if send:
                last = db.execute("SELECT max(created) FROM alerts WHERE kind=? AND subject=? AND sent=1",
                                  (kind, subject)).fetchone()[0] or 0
                held = db.execute("SELECT count(*) FROM alerts WHERE kind=? AND subject=? AND sent=0"
                                  " AND created>?", (kind, subject, last)).fetchone()[0]
            cur = db.execute("INSERT INTO alerts(kind, subject, created, sent, suppressed, message, reporter)"
                             " VALUES (?,?,?,?,?,?,?)", (kind, subject, now, int(send), held, message, reporter))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return send, held, cur.lastrowid

    def record_channels(self, row, channels):
        self.db.execute("UPDATE alerts SET channels=? WHERE id=?", (json.dumps(channels), row))

    def recent(self, since):
        cols = ("id", "kind", "subject", "created", "sent", "suppressed", "message", "channels")
        return [dict(zip(cols, r)) for r in self.db.execute(
            f"SELECT {', '.join(cols)} FROM alerts WHERE created>=? ORDER BY id", (since,))]

    def prune(self, before):
        self.db.execute("DELETE FROM alerts WHERE created<?", (before,))


def build(kind, subject, message, details, severity, now, suppressed, origin, ident=None):
    """The alert document (the webhook's JSON body, the event's data, the mail's source)."""
    if severity not in SEVERITIES:
        severity = "warning"
    return {"id": ident or f"{int(now)}", "kind": clip(kind, 64), "subject": clip(subject), "severity": severity,
            "message": clip(message, 2000), "details": details if isinstance(details, dict) else {},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "suppressed": suppressed, "origin": origin}


def mail_message(doc, mail):
    msg = EmailMessage()
    msg["From"] = mail.get("from") or f"mailfleet@{doc['origin']}"
    msg["To"] = mail["to"]
    msg["Subject"] = clip(f"[mailfleet {doc['severity']}] {doc['kind']}: {doc['subject']}", 180).replace("\n", " ")
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg["X-Mailfleet-Alert"] = f"{doc['kind']} {doc['id']}"  # the same id as in the webhook's JSON
    body = [doc["message"], ""]
    if doc["suppressed"]:
        body.append(f"({doc['suppressed']} similar alert(s) held back since the last one)")
    body += ["", json.dumps(doc, indent=2, sort_keys=True, default=str)]
    msg.set_content("\n".join(body))
    return msg


def post_webhook(url, doc, timeout):
    req = urllib.request.Request(url, data=json.dumps(doc, default=str).encode(), method="POST",
                                 headers={"Content-Type": "application/json",
                                          "User-Agent": "mailfleet-alert"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.status


def relay_address(relay):
    """(host, port) from ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    relay = (relay or "localhost").strip()
    if relay.startswith("["):
        host, _, rest = relay[1:].partition("]")
        return host, int(rest.lstrip(":") or 25)
    if relay.count(":") == 1:
        host, port = relay.split(":")
        return host, int(port)
    return relay, 25


def send_mail(doc, mail, timeout, helo):
    host, port = relay_address(mail.get("relay"))
    with smtplib.SMTP(host, port, local_hostname=mail.get("helo") or helo, timeout=timeout) as smtp:
        refused = smtp.send_message(mail_message(doc, mail))
    return "refused: " + ", ".join(refused) if refused else "sent"


# --- Salt glue -----------------------------------------------------------------------------

def _conf():
    opts = __opts__
    path = opts.get("mailfleet_alert_file") or os.path.join(
        os.path.dirname(opts.get("conf_file") or "/etc/salt/master"), "mailfleet-alert.conf")
    extra = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            extra = (yaml.safe_load(fh) or {}).get("mailfleet_alert") or {}
    return settings(opts.get("mailfleet_alert"), extra)


def _ledger():
    return mailfleet_ledger.path(__opts__)


def _fire(tag, data):
    mailfleet_events.fire(__opts__, tag, data)


def send(kind, subject, message, details=None, severity="warning"):
    """
    Raise one alert (deduplicated and rate-limited per kind+subject). Returns what was
    done per channel, or ``{"suppressed": True}``.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_alert.send test_alert mail01.lab.test 'a test alert' severity=info
    """
    kind = "".join(c for c in str(kind) if c.isalnum() or c in "_-")[:64] or "alert"
    subject = clip(subject)
    now = time.time()
    try:
        conf = _conf()
    except (ValueError, OSError, yaml.YAMLError) as exc:
        log.error("mailfleet_alert: bad settings (%s); event only", exc)
        conf = settings()
    th = Throttle(_ledger(), conf["period"], conf["burst"], conf["kind_burst"])
    try:
        reporter = (details or {}).get("host") if isinstance(details, dict) else None
        go, held, row = th.decide(kind, subject, clip(message, 2000), now,
                                  reporter=reporter if isinstance(reporter, str) else "")
        if not go:
            log.info("mailfleet_alert: %s/%s held back (rate limit)", kind, subject)
            return {"suppressed": True, "kind": kind, "subject": subject}
        doc = build(kind, subject, message, details, severity, now, held, __opts__.get("id"),
                    f"{int(now)}-{row}")
        channels = {}
        try:
            _fire(f"mailfleet/alert/{kind}", doc)
            channels["event"] = "sent"
        except Exception as exc:  # noqa: BLE001
            channels["event"] = f"failed: {exc}"
        if conf["webhook"]:
            try:
                channels["webhook"] = f"HTTP {post_webhook(conf['webhook'], doc, conf['timeout'])}"
            except Exception as exc:  # noqa: BLE001
                channels["webhook"] = f"failed: {clip(exc)}"
        if conf["mail"].get("to"):
            try:
                channels["mail"] = send_mail(doc, conf["mail"], conf["mail_timeout"], __opts__.get("id") or "localhost")
            except Exception as exc:  # noqa: BLE001
                channels["mail"] = f"failed: {clip(exc)}"
        th.record_channels(row, channels)
        th.prune(now - 30 * 86400)
    finally:
        th.close()
    for ch, res in channels.items():
        if res.startswith("failed"):
            log.warning("mailfleet_alert: %s/%s via %s %s", kind, subject, ch, res)
    return {"sent": True, "kind": kind, "subject": subject, "suppressed_before": held, "channels": channels}


def recent(hours=24):
    """
    Alerts of the last ``hours``: sent ones with their channels, held-back ones too.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_alert.recent hours=6
    """
    conf = settings()
    th = Throttle(_ledger(), conf["period"])
    try:
        rows = th.recent(time.time() - float(hours) * 3600)
    finally:
        th.close()
    for r in rows:
        r["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r["created"]))
        r["channels"] = json.loads(r["channels"]) if r["channels"] else None
    return rows
