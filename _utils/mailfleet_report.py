"""
Authenticated reports (issue 13, finding 1): the one checker every runner calls before it
reads a minion's report.

Salt authenticates the outer load of a minion event but forwards the data of batched events
verbatim, so the ``id`` on an event is no proof of its sender. Each mail host therefore signs
what its detector reports with a key that only it and the master hold:

- the master keeps one key file per host (:class:`KeyStore`, ``<dir>/<host>.json``, 0600),
  created on first use; the ``mailfleet_report_key`` ext_pillar hands a host its own key and
  no other; ``rotate`` makes a new current key and keeps the previous one valid for
  ``grace`` seconds, so reports in flight during a rotation are not lost;
- the detector adds ``_auth = {kid, ts, nonce, mac}`` to every event (:func:`sign`): an
  HMAC-SHA256 over the canonical JSON of [tag, host, kid, ts, nonce, data];
- :func:`verify` checks, in this order: shape and size, the key of the host the report
  names, the MAC, the timestamp window, the nonce (never seen within the window). The host
  a verified report names is its sender; nothing else about the event is.

Pure Python, no Salt imports (the detector, the runners and the tests import it).
"""
import hashlib
import hmac
import json
import os
import re
import secrets
import time

# imported when this module loads: Salt's loaders put the utils directories on sys.path only
# while they load, not when a function runs later
import mailfleet_files
import mailfleet_ledger  # one way to open a shared sqlite file (root-only, WAL, locks kept)

__virtualname__ = "mailfleet_report"

FIELD = "_auth"
WINDOW = 300  # seconds a report's timestamp may differ from the master's clock
GRACE = 3600  # seconds a rotated-out key stays valid
MAX_BYTES = 1 << 20
_HOST_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


class Refused(ValueError):
    """A report the master does not act on; the message says why (it names no secret)."""


def __virtual__():
    return __virtualname__


def canonical(tag, host, kid, ts, nonce, body):
    return json.dumps([tag, host, kid, ts, nonce, body], sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, default=str).encode()


def _mac(key_hex, message):
    return hmac.new(bytes.fromhex(key_hex), message, hashlib.sha256).hexdigest()


def sign(key, tag, data, now=None, nonce=None):
    """``data`` with ``_auth`` added; ``key``: {"kid", "key" (hex)} as the pillar holds it."""
    body = {k: v for k, v in data.items() if k != FIELD}
    ts = int(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(12)
    host = body.get("host")
    mac = _mac(key["key"], canonical(tag, host, key["kid"], ts, nonce, body))
    return dict(body, **{FIELD: {"kid": key["kid"], "ts": ts, "nonce": nonce, "mac": mac}})


def verify(tag, payload, keys_of, now=None, seen=None, window=WINDOW, max_bytes=MAX_BYTES):
    """(host, body) of a genuine report, or raise Refused.

    ``keys_of(host)``: {kid: key hex} valid now for that host (empty: unknown host);
    ``seen(host, nonce, ts)``: True when that nonce was already used (and records it)."""
    if not isinstance(payload, dict):
        raise Refused("report is not a mapping")
    if len(json.dumps(payload, default=str)) > max_bytes:
        raise Refused("report too large")
    auth = payload.get(FIELD)
    if not isinstance(auth, dict):
        raise Refused("unsigned report")
    kid, ts, nonce, mac = (auth.get(k) for k in ("kid", "ts", "nonce", "mac"))
    if not (isinstance(kid, str) and isinstance(nonce, str) and isinstance(mac, str)
            and isinstance(ts, int) and not isinstance(ts, bool)
            and len(kid) <= 64 and 8 <= len(nonce) <= 64 and len(mac) == 64):
        raise Refused("malformed signature")
    host = payload.get("host")
    if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
        raise Refused("report names no valid host")
    key = (keys_of(host) or {}).get(kid)
    if key is None:
        raise Refused(f"no valid key {kid[:16]!r} for {host}")
    body = {k: v for k, v in payload.items() if k != FIELD}
    # Salt's script engine adds the minion's "id" to the data after the detector signed it:
    # the report as signed is the one without it (and "id" is then dropped, unproven).
    shapes = [body] + ([{k: v for k, v in body.items() if k != "id"}] if "id" in body else [])
    for shape in shapes:
        if hmac.compare_digest(_mac(key, canonical(tag, host, kid, ts, nonce, shape)), mac):
            body = shape
            break
    else:
        raise Refused(f"bad signature for {host}")
    now = time.time() if now is None else now
    if abs(now - ts) > window:
        raise Refused(f"report of {host} is {int(now - ts)} s old (window {window} s)")
    if seen is not None and seen(host, nonce, ts):
        raise Refused(f"replayed report of {host}")
    return host, body


def check_envelope(payload, sender, max_bytes, refused=Refused):
    """The checks every report shares before its own content is read: a sending minion id,
    a mapping of at most ``max_bytes`` (as JSON) whose ``host`` is that sender (a host never
    reports in another's name). Raises ``refused`` (each runner's own Refused) naming the
    problem."""
    if not isinstance(sender, str) or not sender:
        raise refused("event without a sending minion id")
    if not isinstance(payload, dict):
        raise refused("report is not a mapping")
    if len(json.dumps(payload, default=str)) > max_bytes:
        raise refused("report too large")
    if payload.get("host") != sender:
        raise refused(f"report names host {str(payload.get('host'))[:100]!r} but was sent by {sender!r}")


class KeyStore:
    """The master's report keys: ``<dir>/<host>.json`` = {"current": {kid, key, created},
    "previous": {...} | null, "rotated": ts | null}."""

    def __init__(self, directory, grace=GRACE):
        self.dir, self.grace = directory, grace

    def _path(self, host):
        if not isinstance(host, str) or not _HOST_RE.fullmatch(host):
            raise ValueError(f"not a minion id: {str(host)[:80]!r}")
        return os.path.join(self.dir, f"{host}.json")

    def load(self, host):
        try:
            with open(self._path(host), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None

    def _write(self, host, doc):
        mailfleet_files.write_json(self._path(host), doc, mode=0o600)

    @staticmethod
    def _new(now):
        return {"kid": secrets.token_hex(4), "key": secrets.token_hex(32), "created": int(now)}

    def ensure(self, host, now=None):
        """The host's current key ({kid, key}), made on first use."""
        doc = self.load(host)
        if doc is None:
            doc = {"current": self._new(now or time.time()), "previous": None, "rotated": None}
            self._write(host, doc)
        elif doc.get("revoked") or not doc.get("current"):
            return None  # isolated: no key until restore()
        return {"kid": doc["current"]["kid"], "key": doc["current"]["key"]}

    def rotate(self, host, now=None):
        now = now or time.time()
        doc = self.load(host) or {}
        doc = {"current": self._new(now), "previous": doc.get("current"), "rotated": int(now)}
        self._write(host, doc)
        return {"kid": doc["current"]["kid"]}

    def revoke(self, host, now=None):
        """No key valid for ``host`` any more (isolation); ``ensure`` makes none until restored."""
        self._write(host, {"current": None, "previous": None, "rotated": int(now or time.time()), "revoked": True})

    def restore(self, host, now=None):
        self._write(host, {"current": self._new(now or time.time()), "previous": None, "rotated": None})

    def revoked(self, host):
        try:
            doc = self.load(host)
        except ValueError:
            return False
        return bool(doc and doc.get("revoked"))

    def keys(self, host, now=None):
        """{kid: key hex} valid now."""
        try:
            doc = self.load(host)
        except ValueError:
            return {}
        if not doc or doc.get("revoked") or not doc.get("current"):
            return {}
        out = {doc["current"]["kid"]: doc["current"]["key"]}
        prev, rotated = doc.get("previous"), doc.get("rotated")
        if prev and rotated and (now or time.time()) - rotated <= self.grace:
            out[prev["kid"]] = prev["key"]
        return out


def key_dir(opts, ledger_path):
    """Master option ``mailfleet_report_keys``, else ``report-keys/`` beside the ledger."""
    return opts.get("mailfleet_report_keys") or os.path.join(os.path.dirname(ledger_path), "report-keys")


class NonceStore:
    """Nonces seen within the window, in a sqlite file beside the keys: every reactor job
    (a fresh module in a thread) and every master process sees the same ones."""

    def __init__(self, directory, window=WINDOW):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.db = mailfleet_ledger.connect(
            os.path.join(directory, "nonces.sqlite"),
            "CREATE TABLE IF NOT EXISTS nonces (host TEXT, nonce TEXT, ts REAL, PRIMARY KEY (host, nonce));",
            rows=False)
        self.window = window

    def __call__(self, host, nonce, ts):
        import sqlite3
        try:
            self.db.execute("INSERT INTO nonces VALUES (?,?,?)", (host, nonce, ts))
        except sqlite3.IntegrityError:
            return True
        if secrets.randbelow(100) == 0:  # prune now and then: rows older than twice the window
            self.db.execute("DELETE FROM nonces WHERE ts < ?", (time.time() - 2 * self.window,))
        return False

    def close(self):
        self.db.close()


def check(opts, ledger_path, tag, payload, claimed=None):
    """The master side in one call: (host, body) of a genuine report or raise Refused.

    Master option ``mailfleet_reports:require_signature`` (default True); False accepts an
    unsigned report as the claim of the minion Salt names (``claimed``), for a fleet whose
    hosts do not sign yet, and still verifies a signed one."""
    conf = opts.get("mailfleet_reports") or {}
    if not conf.get("require_signature", True) and isinstance(payload, dict) and FIELD not in payload:
        if not isinstance(claimed, str) or payload.get("host") != claimed:
            raise Refused(f"report names host {payload.get('host')!r} but was sent by {claimed!r}")
        return claimed, payload
    d = key_dir(opts, ledger_path)
    store = KeyStore(d, grace=int(conf.get("grace", GRACE)))
    nonces = NonceStore(d, window=int(conf.get("window", WINDOW)))
    try:
        return verify(tag, payload, store.keys, seen=nonces, window=int(conf.get("window", WINDOW)))
    finally:
        nonces.close()
