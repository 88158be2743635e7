"""
mailfleet DKIM: keys made with ``cryptography``, their DNS records, the private key files
Rspamd reads, and the rotation of a domain's selector as a resumable state machine.

One job, pure (no Salt dunders): imported plainly by the master's runners
(``_runners/mailfleet_dkim.py`` drives the rotation, ``_runners/mailfleet_dns.py`` publishes
its records). Keys live on the master only (outside the file server and git); a host
receives, by pillar, the signing key of the domains it serves.

Key files (the format Rspamd 3.4 loads, ``rspamd_dkim_sign_key_load`` in
src/libserver/dkim.c: a file starting with ``-----BEGIN`` is read as PEM and must hold an
RSA key there; otherwise, when it is valid base64, it is decoded and 32 or 64 bytes are
taken as an ed25519 key):

- RSA: PKCS#8 PEM.
- ed25519: one base64 line of the 64-byte libsodium secret key (32-byte seed followed by
  the 32-byte public key), what ``rspamadm dkim_keygen -t ed25519`` writes. Rspamd 3.4 does
  not load an ed25519 key from PEM (it asks the PEM key for its RSA part); later releases
  do, so this form works for both.

DNS record (RFC 6376 3.6.1): ``v=DKIM1; k=rsa; p=<base64 DER SubjectPublicKeyInfo>``;
ed25519 (RFC 8463 4.2): ``k=ed25519; p=<base64 of the raw 32-byte public key>``; a revoked
key has an empty ``p=`` (RFC 6376 3.6.1).

Rotation (one state per domain and key type, a small JSON-able dict kept on the master)::

    new -> published -> verified -> signing -> old_kept -> revoked -> removed -> (forgotten)

:func:`next_step` looks at the state, the time and what DNS shows (``facts``) and returns
ONE action with the side effects the driver must carry out; :func:`advance` returns the
state after it. The driver: ``action = next_step(...)``; ``new = advance(state, action,
...)``; carry out ``action["effects"]`` from ``new`` (write the key, publish DNS from
``dns_entries(new)``, push the signing selector to the hosts, delete the key); save
``new`` only when they succeeded. Every effect is idempotent, so an interruption at any
point repeats at most one step. Signing never moves to a selector whose record DNS does
not show with the expected key: :func:`next_step` will not propose it and :func:`advance`
refuses it.
"""
import base64
import datetime
import os
import re

import mailfleet_files  # salt://_utils: on sys.path for execution modules and runners

__virtualname__ = "mailfleet_dkimkeys"


def __virtual__():
    return __virtualname__


KEY_TYPES = ("rsa", "ed25519")
DEFAULT_BITS = 2048  # RFC 8301 3.2: signers MUST use at least 1024 bits, SHOULD 2048
STATUSES = ("new", "published", "verified", "signing", "old_kept", "revoked", "removed")
DEFAULTS = {
    "prefix": "mf",
    "keep_old_days": 7,      # old key stays published for mail still in queues/in transit
    "revoked_days": 7,       # empty p= stays published before the name is deleted
    "rotate_days": None,     # rotate automatically after this many days of signing
    "settle_seconds": 0,     # wait after publishing before signing may switch
    "republish_seconds": 600,  # publish again when DNS still does not show it
}
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_SELECTOR = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_DOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")


class DkimError(ValueError):
    """A key, a key file or a rotation step that cannot be used; the message says why."""


# ---------------------------------------------------------------- keys

def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    return serialization, rsa, ed25519


def generate(key_type="rsa", bits=DEFAULT_BITS):
    """A new private key: RSA (``bits``, default 2048) or ed25519."""
    serialization, rsa, ed25519 = _crypto()
    if key_type == "rsa":
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1024 <= bits <= 4096:
            raise DkimError(f"RSA key size {bits!r}: use 1024..4096 bits (RFC 8301: 2048)")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise DkimError(f"key type {key_type!r}: use one of {', '.join(KEY_TYPES)}")


def key_type(key):
    serialization, rsa, ed25519 = _crypto()
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "rsa"
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return "ed25519"
    raise DkimError(f"unsupported key object {type(key).__name__}")


def public_b64(key):
    """The ``p=`` value: base64 DER SubjectPublicKeyInfo (RSA) or raw 32 bytes (ed25519)."""
    serialization, _, _ = _crypto()
    pub = key.public_key() if hasattr(key, "public_key") else key
    if key_type(key) == "rsa":
        der = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        der = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(der).decode("ascii")


def record(key):
    """``v=DKIM1; k=<type>; p=<public key>`` of a private (or public) key."""
    return f"v=DKIM1; k={key_type(key)}; p={public_b64(key)}"


def revoked_record(ktype="rsa"):
    return f"v=DKIM1; k={ktype}; p="


def private_bytes(key):
    """The key file content Rspamd reads (see the module docstring)."""
    serialization, _, _ = _crypto()
    if key_type(key) == "rsa":
        return key.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    # No trailing newline: the file is exactly one base64 string, as rspamadm writes it.
    return base64.b64encode(seed + pub)


def ed25519_seed_b64(key):
    """The 32-byte seed in base64 (what dkimpy and PyNaCl take as an ed25519 signing key)."""
    serialization, _, _ = _crypto()
    return base64.b64encode(key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption())).decode("ascii")


def load_private(data, where="key"):
    """A private key from key file content: PEM (RSA, or ed25519 PKCS#8) or base64 ed25519."""
    serialization, rsa, ed25519 = _crypto()
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimError(f"{where}: not a readable unencrypted PEM private key ({exc})")
        key_type(key)
        return key
    try:
        raw = base64.b64decode(b"".join(text.split()), validate=True)
    except ValueError:
        raise DkimError(f"{where}: neither PEM nor base64")
    if len(raw) not in (32, 64):
        raise DkimError(f"{where}: base64 key of {len(raw)} bytes; an ed25519 key file holds "
                        "32 (seed) or 64 (seed + public key)")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and public_b64(key) != base64.b64encode(raw[32:]).decode("ascii"):
        raise DkimError(f"{where}: the public half of the ed25519 key does not match its seed")
    return key


def read_private_key(path):
    """Load a key file; errors name the path (missing, unreadable, malformed)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DkimError(f"DKIM key {path}: cannot read ({exc.strerror or exc})")
    return load_private(data, where=f"DKIM key {path}")


def write_private_key(path, key, mode=0o600, uid=None, gid=None):
    """
    Write a key file atomically: a temporary file in the same folder, created with
    ``mode`` (0600 by default, never wider while being written), owner set, fsync'd, then
    renamed over ``path``. Returns the public ``p=`` value of the key written.
    """
    data = key if isinstance(key, (bytes, bytearray)) else private_bytes(key)
    mailfleet_files.write_atomic(path, data, mode=mode, uid=uid, gid=gid)
    return public_b64(load_private(bytes(data), where=path))


def key_path(base, domain, selector):
    """``<base>/<domain>/<selector>.key``; refuses names that could leave ``base``."""
    domain, selector = str(domain).lower().rstrip("."), str(selector).lower()
    if not _DOMAIN.match(domain):
        raise DkimError(f"{domain!r} is not a domain name")
    if not _SELECTOR.match(selector):
        raise DkimError(f"{selector!r} is not a valid selector")
    return os.path.join(base, domain, f"{selector}.key")


def parse_record(value):
    """Tags of a DKIM key record (``{"v": ..., "k": ..., "p": ...}``), whitespace removed."""
    tags = {}
    for part in (value or "").split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k.strip().lower()] = "".join(v.split())
    return tags


# ---------------------------------------------------------------- selectors

def _ts(now):
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=datetime.timezone.utc)
        return int(now.timestamp())
    return int(now)


def selector_name(now, ktype="rsa", taken=(), prefix="mf"):
    """
    A dated selector: ``mf20261125`` (RSA), ``mf20261125e`` (ed25519); ``-2``, ``-3``
    ... appended when that name was already used.
    """
    if not re.match(r"^[a-z][a-z0-9]{0,15}$", prefix):
        raise DkimError(f"selector prefix {prefix!r}: use up to 16 lower-case letters/digits")
    day = datetime.datetime.fromtimestamp(_ts(now), datetime.timezone.utc).strftime("%Y%m%d")
    base = f"{prefix}{day}" + ("e" if ktype == "ed25519" else "")
    taken = {str(t).lower() for t in taken}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


# ---------------------------------------------------------------- rotation state

def new_state(domain, ktype="rsa"):
    if ktype not in KEY_TYPES:
        raise DkimError(f"key type {ktype!r}: use one of {', '.join(KEY_TYPES)}")
    return {"version": 1, "domain": str(domain).lower().rstrip("."), "key_type": ktype,
            "rotate": False, "selectors": []}


def _settings(settings):
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (settings or {}).items() if v is not None or k == "rotate_days"})
    return out


def _sel(state, name):
    for entry in state["selectors"]:
        if entry["selector"] == name:
            return entry
    return None


def _by_status(state, *statuses):
    return [e for e in state["selectors"] if e["status"] in statuses]


def signing_selector(state):
    """The selector mail is signed with now (None before the first switch)."""
    found = _by_status(state, "signing")
    return found[0]["selector"] if found else None


def dns_entries(state):
    """
    What DNS must hold for this state, for ``mailfleet_records.build(dkim=...)``:
    published, verified, signing and old_kept selectors with their key, revoked ones with
    an empty ``p=``, removed ones as ``absent`` (still owned, so a stale record is deleted).
    """
    out = []
    for e in state["selectors"]:
        if e["status"] in ("published", "verified", "signing", "old_kept"):
            out.append({"selector": e["selector"], "k": e["k"], "p": e["p"]})
        elif e["status"] == "revoked":
            out.append({"selector": e["selector"], "k": e["k"], "p": ""})
        elif e["status"] == "removed":
            out.append({"selector": e["selector"], "absent": True})
    return out


def dns_shows(facts, selector):
    """
    What ``facts`` say DNS returns for a selector: a TXT value (str), ``None`` (the name
    does not exist / holds no TXT: the caller saw NXDOMAIN or NODATA) or ``...`` (not
    looked up, unknown).
    """
    dns = (facts or {}).get("dns") or {}
    return dns.get(selector, ...) if isinstance(dns, dict) else ...


def _resolves_to(facts, entry, want_p):
    seen = dns_shows(facts, entry["selector"])
    if seen is ... or seen is None:
        return False, "not found in DNS" if seen is None else "not looked up"
    tags = parse_record(seen)
    if tags.get("k", "rsa") != entry["k"] or tags.get("p", None) != want_p:
        return False, f"DNS shows {seen!r}"
    return True, "resolves"


def _drifted(facts, entry):
    """Why DNS (when looked up) differs from what this selector's status publishes."""
    if dns_shows(facts, entry["selector"]) is ...:
        return None
    want = "" if entry["status"] == "revoked" else entry["p"]
    ok, why = _resolves_to(facts, entry, want)
    return None if ok else why


def _key_problem(facts, entry):
    """A problem with the selector's private key file, from ``facts["keys"]`` if given."""
    keys = (facts or {}).get("keys")
    if not isinstance(keys, dict) or entry["selector"] not in keys:
        return None
    got = keys[entry["selector"]]
    if got is None:
        return f"private key of selector {entry['selector']} is missing or unreadable"
    if got != entry["p"]:
        return f"private key of selector {entry['selector']} does not match its public key"
    return None


def _act(action, selector=None, why="", effects=(), **extra):
    out = {"action": action, "selector": selector, "why": why, "effects": list(effects)}
    out.update(extra)
    return out


def next_step(state, now, facts=None, settings=None):
    """
    Decide the next rotation step. ``facts``: ``{"dns": {selector: TXT value | None},
    "keys": {selector: public p of its key file | None}}`` (both optional: what is not
    given counts as unknown). Returns ``{"action", "selector", "why", "effects", ...}``;
    action is one of generate, publish, verified, switch_signing, revoke, remove, forget
    (something to do), wait (something is due but not possible yet), none (nothing due;
    ``next_at`` says when something will be), error (needs an operator).
    """
    cfg = _settings(settings)
    t = _ts(now)
    day = 86400
    waits, due = [], []

    for e in state["selectors"]:
        kp = _key_problem(facts, e) if e["status"] in ("new", "published", "verified",
                                                       "signing") else None
        if kp:
            return _act("error", e["selector"], kp + "; nothing switched, nothing published")

    for e in state["selectors"]:
        s, name = e["status"], e["selector"]
        since = e.get("since", e.get("created", t))
        if s == "removed":
            seen = dns_shows(facts, name)
            if seen is None:
                due.append(_act("forget", name, "record is gone from DNS", ["delete_key"]))
            elif seen is ...:
                waits.append(_act("wait", name, "removed; waiting for DNS facts to confirm"))
            elif t - e.get("published_at", since) >= cfg["republish_seconds"]:
                due.append(_act("publish", name, f"removed but DNS still shows {seen!r}",
                                ["publish_dns"]))
            else:
                waits.append(_act("wait", name, f"removed; DNS still shows {seen!r}"))
        elif s == "new":
            due.append(_act("publish", name, "new key: publish its record", ["publish_dns"]))
        elif s == "published":
            ok, why = _resolves_to(facts, e, e["p"])
            if ok:
                due.append(_act("verified", name, "DNS shows the published key"))
            elif t - e.get("published_at", since) >= cfg["republish_seconds"]:
                due.append(_act("publish", name, f"published but {why}; publishing again",
                                ["publish_dns"]))
            else:
                waits.append(_act("wait", name, f"published, {why}; waiting for DNS"))
        elif s == "verified":
            ok, why = _resolves_to(facts, e, e["p"])
            if not ok and dns_shows(facts, name) is not ... and (
                    t - e.get("published_at", since) >= cfg["republish_seconds"]):
                due.append(_act("publish", name, f"verified earlier but now {why}; "
                                "publishing again", ["publish_dns"]))
            elif not ok:
                waits.append(_act("wait", name, f"refusing to switch signing to {name}: {why}"))
            elif t - e.get("published_at", since) < cfg["settle_seconds"]:
                waits.append(_act("wait", name, "verified; letting the record settle",
                                  until=e.get("published_at", since) + cfg["settle_seconds"]))
            else:
                due.append(_act("switch_signing", name, "DNS shows the new key: sign with it",
                                ["push_signing"]))
        elif s == "old_kept" and t - since >= cfg["keep_old_days"] * day:
            due.append(_act("revoke", name, f"kept {cfg['keep_old_days']} days after "
                            "signing stopped: publish an empty p=",
                            ["publish_dns", "delete_key"]))
        elif s == "revoked" and t - since >= cfg["revoked_days"] * day:
            due.append(_act("remove", name, f"revoked for {cfg['revoked_days']} days: "
                            "delete the record", ["publish_dns"]))
        elif s in ("signing", "old_kept", "revoked") and _drifted(facts, e) and (
                t - e.get("published_at", since) >= cfg["republish_seconds"]):
            # A due revoke/remove above wins: a step interrupted after its DNS change is
            # repeated, never undone.
            due.append(_act("publish", name, f"{s} selector: {_drifted(facts, e)}; "
                            "publishing again", ["publish_dns"]))

    pending = _by_status(state, "new", "published", "verified")
    signing = _by_status(state, "signing")
    if not pending:
        if not signing:
            due.append(_act("generate", selector_name(t, state["key_type"], _taken(state),
                                                      cfg["prefix"]),
                            "no key signs for this domain yet", ["write_key"]))
        else:
            age = t - signing[0].get("since", t)
            if state.get("rotate"):
                due.append(_act("generate", selector_name(t, state["key_type"], _taken(state),
                                                          cfg["prefix"]),
                                "rotation requested", ["write_key"]))
            elif cfg["rotate_days"] and age >= cfg["rotate_days"] * day:
                due.append(_act("generate", selector_name(t, state["key_type"], _taken(state),
                                                          cfg["prefix"]),
                                f"signing key is {age // day} days old", ["write_key"]))

    if due:
        return due[0]
    if waits:
        return dict(waits[0], waiting=[w["why"] for w in waits])
    return _act("none", signing_selector(state), "nothing due", next_at=_next_at(state, cfg))


def _taken(state):
    """Every selector name this domain has used, current and forgotten: a name is never
    reused with another key (resolvers and verifiers cache the old record for its TTL)."""
    return [e["selector"] for e in state["selectors"]] + list(state.get("retired") or [])


def _next_at(state, cfg):
    times = []
    for e in state["selectors"]:
        if e["status"] == "old_kept":
            times.append(e["since"] + int(cfg["keep_old_days"] * 86400))
        elif e["status"] == "revoked":
            times.append(e["since"] + int(cfg["revoked_days"] * 86400))
        elif e["status"] == "signing" and cfg["rotate_days"]:
            times.append(e["since"] + int(cfg["rotate_days"] * 86400))
    return min(times) if times else None


def advance(state, action, now, facts=None, public=None):
    """
    The state after ``action`` (from :func:`next_step`) was carried out; ``state`` is not
    modified. ``generate`` needs ``public`` (the new key's ``p=``); ``switch_signing``
    needs ``facts`` and refuses (DkimError) unless DNS shows the selector's key.
    """
    import copy

    new = copy.deepcopy(state)
    t = _ts(now)
    act, name = action["action"], action.get("selector")
    entry = _sel(new, name) if name else None

    if act in ("none", "wait"):
        return new
    if act == "error":
        raise DkimError(action["why"])
    if act == "generate":
        if entry is not None:
            raise DkimError(f"selector {name} already exists for {new['domain']}")
        if not public:
            raise DkimError("generate: the new key's public value is required")
        new["selectors"].append({"selector": name, "k": new["key_type"], "p": public,
                                 "status": "new", "created": t, "since": t})
        new["rotate"] = False
        return new
    if entry is None:
        raise DkimError(f"{act}: unknown selector {name!r} for {new['domain']}")
    expect = {"publish": STATUSES, "verified": ("published",),
              "switch_signing": ("verified",), "revoke": ("old_kept",),
              "remove": ("revoked",), "forget": ("removed",)}[act]
    if entry["status"] not in expect:
        raise DkimError(f"{act}: selector {name} is {entry['status']}, not {'/'.join(expect)}")
    if act == "publish":
        if entry["status"] == "new":
            entry["status"], entry["since"] = "published", t
        entry["published_at"] = t
    elif act == "verified":
        entry["status"], entry["since"] = "verified", t
    elif act == "switch_signing":
        ok, why = _resolves_to(facts, entry, entry["p"])
        if not ok:
            raise DkimError(f"refusing to sign with selector {name} of {new['domain']}: {why}")
        for old in _by_status(new, "signing"):
            old["status"], old["since"] = "old_kept", t
        entry["status"], entry["since"] = "signing", t
    elif act == "revoke":
        entry["status"], entry["since"], entry["published_at"] = "revoked", t, t
    elif act == "remove":
        entry["status"], entry["since"], entry["published_at"] = "removed", t, t
    elif act == "forget":
        new["selectors"].remove(entry)
        retired = new.setdefault("retired", [])
        if name not in retired:
            retired.append(name)
    return new


def request_rotation(state):
    new = dict(state, rotate=True)
    return new


def validate_state(state):
    """Problems of a loaded state dict (a hand-edited or damaged state file)."""
    out = []
    if not isinstance(state, dict) or state.get("version") != 1:
        return ["state: not a version 1 rotation state"]
    if state.get("key_type") not in KEY_TYPES:
        out.append(f"state: key_type {state.get('key_type')!r}")
    names = set()
    for e in state.get("selectors") or []:
        if e.get("status") not in STATUSES:
            out.append(f"state: selector {e.get('selector')!r}: status {e.get('status')!r}")
        if e.get("selector") in names:
            out.append(f"state: selector {e.get('selector')!r} listed twice")
        names.add(e.get("selector"))
    if len(_by_status(state, "signing")) > 1:
        out.append("state: more than one signing selector")
    return out
