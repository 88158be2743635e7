"""
ext_pillar: each minion receives only the mail domains it serves.

A domain is onboarded by adding one file under the configured folder; the file declares
the domain's data, including ``hosts`` (the minion ids that serve it), in the same shape
as the rest of the pillar::

    # pillar/domains/example-a.test.yaml
    mailfleet:
      domains:
        example-a.test:
          hosts: [mail01.lab.test]
          mailboxes: {...}

Master configuration (``path``: one folder or a list of folders)::

    ext_pillar:
      - mailfleet_domains:
          path: /srv/mailfleet/pillar/domains
          pack_over: 5000     # optional, the default; null: never pack

A hosting box's pillar is mostly mailboxes and aliases, and Salt 3008 pays per object on
the way to the minion (decoding every embedded string, then wrapping every dict and list
for secret masking: about 4 s for 100,000 mailboxes). So when a host receives more than
``pack_over`` mailboxes plus aliases, each domain's ``mailboxes`` and ``aliases`` travel
as one JSON string under ``mailfleet:domains:<domain>:packed_json`` (a reserved key),
which the ``mailfleet_vusers`` module unpacks; everything else in the domain's data stays
as written. Domains whose keys JSON cannot carry faithfully (non-string keys) are sent as
written.

Secrets in a domain file (password hashes) therefore reach only the hosts named in it.
The same goes for DKIM: for every served domain whose key the master keeps (the
``mailfleet_dkim`` runner, under ``mailfleet_dkim_dir``, default
``/var/lib/mailfleet-master/dkim``), the host receives the signing selector and its private
key under ``mailfleet:dkim:<domain>`` (``selector``, ``key_type``, ``key``).
Files are parsed with libyaml's C loader and cached by (mtime, size), so a fleet with
10,000 domain files re-reads only what changed. The cache must outlive the module: the
master builds a fresh loader, and so a fresh copy of this module, for every pillar
request, and each of its worker processes starts cold. So parsed files are kept once per
process (in ``sys.modules``, which every copy of the module sees) and in one msgpack file
per folder under the master's cachedir (``mailfleet_domains/``, root only, written
atomically), from which a cold worker starts in under a second instead of re-parsing
10,000 YAML files (about 9 s). Order ``mailfleet_domains`` last among ext_pillars: Salt
deep-copies the pillar gathered so far before merging each further source into it.
"""
import hashlib
import json
import logging
import os
import re
import sys
import types

import yaml

try:
    import msgpack
except ImportError:  # pragma: no cover - a dependency of Salt itself
    msgpack = None

log = logging.getLogger(__name__)
__virtualname__ = "mailfleet_domains"

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml is part of PyYAML's wheels
    _Loader = yaml.SafeLoader

PACKED_KEY = "packed_json"
PACKED_FIELDS = ("mailboxes", "aliases")
DEFAULT_PACK_OVER = 5000

# path -> (mtime_ns, size, {domain: [wire data, count, packed?]}), shared by every copy of
# this module in the process (see the module doc). "Wire data" is the domain's data with
# mailboxes and aliases already packed where JSON carries them faithfully (packing is paid
# once per file change, and the disk cache then holds strings, which load fast); "count"
# is its number of mailboxes plus aliases. Handed to Salt by reference: read-only.
_SHARED = sys.modules.setdefault("_mailfleet_domains_wire_cache",
                                 types.ModuleType("_mailfleet_domains_wire_cache"))
if not hasattr(_SHARED, "files"):
    _SHARED.files = {}
if not hasattr(_SHARED, "disk"):  # a worker that loaded an older version of this module has files only
    _SHARED.disk = {}  # cache file -> (its mtime_ns, its entries), as last read
_CACHE = _SHARED.files


def __virtual__():
    return __virtualname__


def _string_keys_only(value):
    if isinstance(value, dict):
        return all(isinstance(k, str) and _string_keys_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_string_keys_only(v) for v in value)
    return True


def wire_form(data):
    """``[data, count, packed]``: the domain's data with ``mailboxes`` and ``aliases`` as one
    JSON string under PACKED_KEY (or as written, when it holds neither or JSON would
    change it: non-string keys, dates), and how many mailboxes plus aliases it declares."""
    if not isinstance(data, dict):
        return [data, 0, False]
    inner = {f: data[f] for f in PACKED_FIELDS if f in data}
    count = sum(len(v) for v in inner.values() if isinstance(v, (dict, list)))
    if not inner or PACKED_KEY in data or not _string_keys_only(inner):
        return [data, count, False]
    try:
        text = json.dumps(inner, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return [data, count, False]
    out = {k: v for k, v in data.items() if k not in PACKED_FIELDS}
    out[PACKED_KEY] = text
    return [out, count, True]


def as_written(wire):
    """The domain's data as its file declares it, from the wire form."""
    data, _, is_packed = wire
    if not is_packed:
        return data
    out = {k: v for k, v in data.items() if k != PACKED_KEY}
    out.update(json.loads(data[PACKED_KEY]))
    return out


def _domains_in(path, disk=None, counts=None):
    stat = os.stat(path)
    cached = _CACHE.get(path)
    if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
        return cached[2]
    stored = (disk or {}).get(path)
    if stored and stored[0] == stat.st_mtime_ns and stored[1] == stat.st_size:
        _CACHE[path] = tuple(stored)  # another worker parsed it already
        return stored[2]
    if counts is not None:
        counts["parsed"] += 1
    with open(path, "rb") as handle:
        data = yaml.load(handle, Loader=_Loader) or {}
    domains = ((data.get("mailfleet") or {}).get("domains") or {}) if isinstance(data, dict) else {}
    if not isinstance(domains, dict):
        log.error("mailfleet_domains: %s: mailfleet:domains is not a mapping; ignored", path)
        domains = {}
    wire = {domain: wire_form(value) for domain, value in domains.items()}
    _CACHE[path] = (stat.st_mtime_ns, stat.st_size, wire)
    return wire


def _disk_cache_path(folder, cachedir):
    digest = hashlib.sha256(os.path.abspath(folder).encode()).hexdigest()[:16]
    return os.path.join(cachedir, "mailfleet_domains", f"{digest}.msgpack")


def _disk_entries(folder, cachedir):
    """{path: [mtime_ns, size, domains]} from the folder's cache file, re-read whenever
    another worker has rewritten it (so 10,000 new files are parsed by one worker, not by
    each); a file's entry is used only while its (mtime, size) still match."""
    if not cachedir or msgpack is None:
        return {}
    target = _disk_cache_path(folder, cachedir)
    try:
        mtime = os.stat(target).st_mtime_ns
    except OSError:
        return {}
    seen = _SHARED.disk.get(target)
    if seen and seen[0] == mtime:
        return seen[1]
    entries = {}
    try:
        with open(target, "rb") as handle:
            raw = msgpack.unpackb(handle.read(), raw=False, strict_map_key=False)
        for path, (mtime_ns, size, domains) in (raw or {}).items():
            if all(isinstance(w, list) and len(w) == 3 for w in domains.values()):
                entries[path] = (mtime_ns, size, domains)
    except (OSError, ValueError, TypeError, AttributeError,
            msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as err:
        log.warning("mailfleet_domains: parse cache of %s unusable (%s); re-parsing", folder, err)
        entries = {}
    _SHARED.disk[target] = (mtime, entries)
    return entries


def _save_disk_cache(folder, cachedir):
    if not cachedir or msgpack is None:
        return
    target = _disk_cache_path(folder, cachedir)
    prefix = os.path.join(folder, "")
    entries = {p: list(v) for p, v in _CACHE.items() if p.startswith(prefix)}
    tmp = f"{target}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(msgpack.packb(entries, use_bin_type=True))
        os.replace(tmp, target)  # atomic: workers racing here each leave a whole file
    except (OSError, TypeError, ValueError) as err:
        log.warning("mailfleet_domains: cannot write parse cache %s (%s)", target, err)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def domains_for(minion_id, folder, cachedir=None):
    """{domain: wire form} of every domain file in ``folder`` whose ``hosts`` names
    ``minion_id``. ``cachedir``: where to keep the parse cache between processes (None:
    memory only)."""
    served, seen, counts = {}, set(), {"parsed": 0}
    disk = _disk_entries(folder, cachedir)
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        log.error("mailfleet_domains: cannot read %s: %s", folder, err)
        return served
    for name in names:
        if not name.endswith((".yaml", ".yml", ".sls")):
            continue
        path = os.path.join(folder, name)
        seen.add(path)
        try:
            domains = _domains_in(path, disk, counts)
        except (OSError, yaml.YAMLError) as err:
            # A broken file must not hand a host a partial view silently: say which file.
            log.error("mailfleet_domains: %s unreadable (%s); its domains are left out", path, err)
            continue
        for domain, wire in domains.items():
            hosts = (wire[0] if isinstance(wire[0], dict) else {}).get("hosts") or []
            if minion_id in hosts:
                served[domain] = wire
    for gone in set(_CACHE) - seen:
        if os.path.dirname(gone) == folder:
            del _CACHE[gone]
            counts["parsed"] += 1
    if counts["parsed"] or set(disk) - seen:
        _save_disk_cache(folder, cachedir)
    return served


def _for_the_wire(served, pack_over):
    """Packed domains when the host receives more than ``pack_over`` mailboxes plus
    aliases, else every domain as written."""
    total = sum(w[1] for w in served.values())
    if pack_over is not None and total > int(pack_over):
        return {domain: w[0] for domain, w in served.items()}
    return {domain: as_written(w) for domain, w in served.items()}


DEFAULT_DKIM_DIR = "/var/lib/mailfleet-master/dkim"
_SAFE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def dkim_for(domain, base):
    """``{"selector", "key_type", "key"}`` of the domain's signing selector, or None.
    Read fresh each time (a rotation switches the selector); errors are logged."""
    domain = str(domain).lower().rstrip(".")
    if not _SAFE.match(domain) or ".." in domain:
        return None
    folder = os.path.join(base, domain)
    try:
        with open(os.path.join(folder, "state.json"), encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.error("mailfleet_domains: DKIM state of %s unreadable (%s); no key handed out",
                  domain, err)
        return None
    signing = [e for e in state.get("selectors") or [] if e.get("status") == "signing"]
    if len(signing) != 1 or not _SAFE.match(str(signing[0].get("selector", ""))):
        return None
    selector = signing[0]["selector"]
    try:
        with open(os.path.join(folder, f"{selector}.key"), encoding="ascii") as handle:
            key = handle.read()
    except (OSError, ValueError) as err:
        log.error("mailfleet_domains: DKIM key %s of %s unreadable (%s)", selector, domain, err)
        return None
    return {"selector": selector, "key_type": state.get("key_type", "rsa"), "key": key}


def ext_pillar(minion_id, pillar, path=None, dkim_dir=None, **kwargs):  # pylint: disable=unused-argument
    if not path:
        log.error("mailfleet_domains: no path configured")
        return {}
    served = {}
    opts = globals().get("__opts__", {})
    cachedir = kwargs.get("cachedir") or opts.get("cachedir")
    for folder in [path] if isinstance(path, str) else list(path):
        for domain, data in domains_for(minion_id, folder, cachedir).items():
            if domain in served:
                log.error("mailfleet_domains: %s is declared in more than one folder; "
                          "the copy in %s is ignored", domain, folder)
                continue
            served[domain] = data
    if not served:
        return {}
    out = {"mailfleet": {"domains": _for_the_wire(served, kwargs.get("pack_over", DEFAULT_PACK_OVER))}}
    base = dkim_dir or opts.get("mailfleet_dkim_dir") or DEFAULT_DKIM_DIR
    keys = {d: k for d in served for k in [dkim_for(d, base)] if k}
    if keys:
        out["mailfleet"]["dkim"] = keys
    return out
