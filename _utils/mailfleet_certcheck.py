"""
Certificate checks of a mail host: what is on disk, what each port serves, when to tell.

One job, no Salt dunders (unit-tested in tests/unit/test_certwatch.py), imported plainly by
the mailfleet_watch detector and the ``mailfleet_certwatch`` execution module (Salt puts the
utils directories on ``sys.path``):

- :func:`cert_info`: serial, SHA-256 fingerprint, notAfter and names of the first certificate
  of a PEM (or DER) blob (``cryptography``).
- :func:`assess`: the problems of one lineage from what is on disk and what each port serves:
  ``expiring`` (days left on disk below the threshold: certbot's timer renews at 30 days, so
  this means renewal failed), ``stale:<port>`` (the port serves another certificate than the
  one on disk: renewed but not reloaded), ``missing`` (no readable certificate on disk),
  ``unreachable:<port>`` (no TLS handshake on that port; reported, not acted on).
- :class:`Tracker`: when to tell the master: when a lineage's set of problems changes
  (including back to none: ``resolved``), and again every ``repeat`` seconds while it has
  problems. Never one event per probe round.
- :func:`settings`: engine settings from pillar ``mailfleet:defense:cert_*`` (errors name the key).

I/O (here, so that the detector and the minion functions share it):
:func:`probe` (the certificate a port serves: SMTP STARTTLS on 25/587, implicit TLS on 993/465),
:func:`read_lineage`.

Minion functions (``_modules/mailfleet_certwatch.py``: status, renew, reload) use it.

Pillar ``mailfleet:defense`` (salt/mail/defense.sls hands them to the mailfleet_watch engine)::

    cert_threshold_days: 21    # event when the certificate on disk has fewer days left
    cert_interval: 3600        # seconds between probe rounds
    cert_repeat: 86400         # seconds before an unchanged problem is reported again
    cert_lineages: []          # certbot lineage names; default the host's myhostname
    cert_ports: {25: starttls, 587: starttls, 993: tls}
    cert_address: 127.0.0.1    # where the probes connect (the host itself)
    cert_timeout: 10           # seconds per probe
"""
import hashlib
import logging
import os
import re
import socket
import ssl
import time

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_certcheck"

DAY = 86400.0
MODES = ("starttls", "tls")
DEFAULTS = {"threshold_days": 21, "interval": 3600, "repeat": 86400, "lineages": [],
            "live_dir": "/etc/letsencrypt/live", "ports": {25: "starttls", 587: "starttls", 993: "tls"},
            "address": "127.0.0.1", "timeout": 10}
NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")


def __virtual__():
    return __virtualname__


# --- pure ----------------------------------------------------------------------------------

def valid_name(name):
    """A certbot lineage name we accept: a DNS name (no slashes, no dots-only, lower case)."""
    return isinstance(name, str) and bool(NAME_RE.match(name))


def cert_info(blob):
    """{serial, sha256, not_after (epoch), names} of the first certificate in ``blob``
    (PEM text/bytes, or DER bytes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if isinstance(blob, str):
        blob = blob.encode()
    if b"-----BEGIN CERTIFICATE-----" in blob:
        cert = x509.load_pem_x509_certificate(blob)
    else:
        cert = x509.load_der_x509_certificate(blob)
    der = cert.public_bytes(serialization.Encoding.DER)
    try:
        not_after = cert.not_valid_after_utc.timestamp()
    except AttributeError:  # cryptography < 42
        import calendar
        not_after = float(calendar.timegm(cert.not_valid_after.timetuple()))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = sorted(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    serial = format(cert.serial_number, "X")
    serial = "0" * (len(serial) % 2) + serial  # as openssl x509 -serial prints it
    return {"serial": serial, "sha256": hashlib.sha256(der).hexdigest(),
            "not_after": not_after, "names": names}


def days_left(not_after, now):
    return (float(not_after) - float(now)) / DAY


def assess(disk, served, threshold_days, now):
    """Problems of one lineage, sorted.

    ``disk``: cert_info of the lineage's cert.pem, or {"error": ...}; ``served``: {port:
    cert_info or {"error": ...}}."""
    problems = set()
    if not disk or "sha256" not in disk:
        problems.add("missing")
    elif days_left(disk["not_after"], now) < float(threshold_days):
        problems.add("expiring")
    for port, got in (served or {}).items():
        if not got or "sha256" not in got:
            problems.add(f"unreachable:{port}")
        elif disk and "sha256" in disk and got["sha256"] != disk["sha256"]:
            problems.add(f"stale:{port}")
    return sorted(problems)


def summary(info, now):
    """What an event carries about one certificate (no PEM, small)."""
    if not info or "sha256" not in info:
        return {"error": str((info or {}).get("error") or "none")[:200]}
    return {"serial": info["serial"], "sha256": info["sha256"], "not_after": int(info["not_after"]),
            "days_left": round(days_left(info["not_after"], now), 2)}


class Tracker:
    """Report a lineage when its problems change, and every ``repeat`` seconds while it has
    some. A first round with no problem says nothing; problems that go away say ``resolved``."""

    def __init__(self, repeat):
        self.repeat = float(repeat)
        self.last = {}  # name -> (problems tuple, monotonic time reported)

    def update(self, name, problems, mono):
        """'new' | 'changed' | 'repeat' | 'resolved' | None (nothing to report)."""
        problems = tuple(problems)
        prev = self.last.get(name)
        if prev is None:
            if not problems:
                self.last[name] = (problems, mono)
                return None
            self.last[name] = (problems, mono)
            return "new"
        if problems != prev[0]:
            self.last[name] = (problems, mono)
            return "resolved" if not problems else ("new" if not prev[0] else "changed")
        if problems and mono - prev[1] >= self.repeat:
            self.last[name] = (problems, mono)
            return "repeat"
        return None

    def forget(self, name):
        """The report did not reach the master: say it again next round."""
        self.last.pop(name, None)


def _number(conf, key, pkey, minimum):
    v = conf.get(key, DEFAULTS[key])
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < minimum:
        raise ValueError(f"mailfleet:defense:{pkey}: {v!r} is not a number >= {minimum}")
    return v


def settings(conf, default_name=None):
    """Checked engine settings (keys without the ``cert_`` prefix, as defense.sls writes them)."""
    conf = dict(conf or {})
    out = {"threshold_days": _number(conf, "threshold_days", "cert_threshold_days", 0),
           "interval": _number(conf, "interval", "cert_interval", 1),
           "repeat": _number(conf, "repeat", "cert_repeat", 1),
           "timeout": _number(conf, "timeout", "cert_timeout", 1)}
    names = conf.get("lineages") or ([default_name] if default_name else [])
    if not isinstance(names, list) or not names or not all(valid_name(n) for n in names):
        raise ValueError(f"mailfleet:defense:cert_lineages: {names!r} is not a list of DNS names")
    out["lineages"] = list(names)
    live = conf.get("live_dir") or DEFAULTS["live_dir"]
    if not isinstance(live, str) or not live.startswith("/"):
        raise ValueError(f"mailfleet:defense:cert_live_dir: {live!r} is not an absolute path")
    out["live_dir"] = live
    ports = conf.get("ports") or DEFAULTS["ports"]
    if not isinstance(ports, dict):
        raise ValueError(f"mailfleet:defense:cert_ports: {ports!r} is not a mapping port: starttls|tls")
    out["ports"] = {}
    for p, mode in ports.items():
        try:
            port = int(p)
        except (TypeError, ValueError):
            port = 0
        if not 0 < port < 65536 or mode not in MODES:
            raise ValueError(f"mailfleet:defense:cert_ports: {p!r}: {mode!r} (port: starttls|tls)")
        out["ports"][port] = mode
    out["address"] = str(conf.get("address") or DEFAULTS["address"])
    return out


# --- I/O -----------------------------------------------------------------------------------

def _context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # we compare with the file on disk, we do not verify
    return ctx


def _smtp_starttls(sock, timeout):
    f = sock.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline(1024)
            if not line:
                raise OSError("connection closed")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                return lines[0][:3], lines
            if len(lines) > 100:
                raise OSError("endless reply")

    code, _ = reply()
    if code != b"220":
        raise OSError(f"greeting {code!r}")
    sock.sendall(b"EHLO mailfleet-certwatch.invalid\r\n")
    code, lines = reply()
    if code != b"250" or not any(b"STARTTLS" in ln.upper() for ln in lines):
        raise OSError("no STARTTLS offered")
    sock.sendall(b"STARTTLS\r\n")
    code, _ = reply()
    if code != b"220":
        raise OSError(f"STARTTLS answered {code!r}")
    f.close()


def probe(address, port, mode, server_name=None, timeout=10):
    """cert_info of the certificate served on address:port (mode starttls|tls), or {"error"}."""
    try:
        with socket.create_connection((address, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            if mode == "starttls":
                _smtp_starttls(sock, timeout)
            with _context().wrap_socket(sock, server_hostname=server_name) as tls:
                der = tls.getpeercert(binary_form=True)
                if mode == "starttls":
                    try:
                        tls.sendall(b"QUIT\r\n")
                    except OSError:
                        pass
        return cert_info(der)
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def read_lineage(live_dir, name):
    path = os.path.join(live_dir, name, "cert.pem")
    try:
        with open(path, "rb") as fh:
            return cert_info(fh.read())
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{path}: {type(exc).__name__}: {exc}"[:200]}


def check_lineage(conf, name, now=None):
    """{name, problems, disk, served} of one lineage now (``conf``: :func:`settings`)."""
    now = time.time() if now is None else now
    disk = read_lineage(conf["live_dir"], name)
    served = {p: probe(conf["address"], p, m, name, conf["timeout"]) for p, m in sorted(conf["ports"].items())}
    return {"name": name, "problems": assess(disk, served, conf["threshold_days"], now),
            "disk": summary(disk, now), "served": {str(p): summary(s, now) for p, s in served.items()}}


TAG = "mailfleet/cert/problem"


class Watcher:
    """The mailfleet_watch engine's certificate thread: one probe round per ``interval``,
    one event per round at most, and only for lineages the :class:`Tracker` reports."""

    def __init__(self, host, conf, check=None):
        self.host = host
        self.conf = conf  # settings()
        self.check = check or check_lineage
        self.tracker = Tracker(conf["repeat"])

    def round(self, now=None, mono=None):
        now = time.time() if now is None else now
        mono = time.monotonic() if mono is None else mono
        out = []
        for name in self.conf["lineages"]:
            res = self.check(self.conf, name, now)
            why = self.tracker.update(name, res["problems"], mono)
            if why:
                out.append(dict(res, report=why))
        if not out:
            return None
        return {"host": self.host, "threshold_days": self.conf["threshold_days"], "lineages": out}

    def run(self, fire, stop=None, start_delay=15.0):
        """``start_delay``: the minion connects to its master after the engine starts; an
        event fired before that is lost (seen in the lab), so the first round waits."""
        if stop:
            stop.wait(start_delay)
        else:
            time.sleep(start_delay)
        while not (stop and stop.is_set()):
            started = time.monotonic()
            ev = None
            try:
                ev = self.round()
                if ev is not None:
                    if fire(ev, TAG) is False:
                        raise RuntimeError("event.fire_master returned False")
                    log.info("mailfleet_watch: certificates %s", "; ".join(
                        f"{x['name']} {x['report']} {','.join(x['problems']) or 'ok'}" for x in ev["lineages"]))
            except Exception:  # noqa: BLE001
                log.exception("mailfleet_watch: certificate round failed")
                for x in (ev or {}).get("lineages") or []:
                    self.tracker.forget(x["name"])
            left = max(1.0, self.conf["interval"] - (time.monotonic() - started))
            if stop:
                stop.wait(left)
            else:
                time.sleep(left)
