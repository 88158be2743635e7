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

A broken input never takes a domain offline (issue 14). Every file is checked by the one
pillar validator (_utils/mailfleet_pillar.py) before any host receives it: a file that does
not parse, or whose names or values are invalid (a domain name that is not one, ``hosts``
that is not a list of exact minion ids, a local part with ``/``, a plaintext password ...),
is refused with an error naming the file and the pillar key, an alert is raised
(``mailfleet_alert``, kind ``pillar_refused``), and its last good version stays in service:
the parse cache holds only good versions, and its disk copy survives a master restart. A
domain declared in two files (in one folder or several) is an error too: it stays with the
file that declared it first (``owners.json`` beside the parse cache) and the other file's
hosts receive nothing of it, neither its mailboxes nor its DKIM key. Removing a file is how
a domain is removed.
"""
import hashlib
import json
import logging
import os
import re
import sys
import types

import yaml

import mailfleet_files
import mailfleet_pillar

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
if not hasattr(_SHARED, "refused"):
    _SHARED.refused = {}  # path -> ((mtime_ns, size), problems): a version refused, not re-parsed
if not hasattr(_SHARED, "owners"):
    _SHARED.owners = {}  # cache file -> (its mtime_ns, {domain: path})
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


def _parse(path):
    """``(wire domains, problems)`` of one file as it is on disk now."""
    try:
        with open(path, "rb") as handle:
            data = yaml.load(handle, Loader=_Loader) or {}
    except yaml.YAMLError as err:
        return {}, [f"{path}: does not parse: {err}"]
    if not isinstance(data, dict):
        return {}, [f"{path}: not a mapping"]
    domains = (data.get("mailfleet") or {}).get("domains") if isinstance(data.get("mailfleet"), dict) else None
    if domains is None:
        return {}, []  # a file with no domains (yet)
    problems = mailfleet_pillar.validate_file_domains(domains)
    if problems:
        return {}, problems
    return {domain: wire_form(value) for domain, value in domains.items()}, []


def _domains_in(path, disk=None, counts=None, opts=None):
    """The file's domains in service: as on disk when that version is good, else its last
    good version (this process's or the disk cache's), with the refusal alerted once."""
    stat = os.stat(path)
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = _CACHE.get(path)
    if cached and cached[:2] == stamp:
        return cached[2]
    stored = (disk or {}).get(path)
    if stored and tuple(stored[:2]) == stamp:
        _CACHE[path] = tuple(stored)  # another worker parsed it already
        return stored[2]
    refused = _SHARED.refused.get(path)
    if refused is None or refused[0] != stamp:
        if counts is not None:
            counts["parsed"] += 1
        wire, problems = _parse(path)
        if not problems:
            _SHARED.refused.pop(path, None)
            _CACHE[path] = (stamp[0], stamp[1], wire)
            return wire
        _SHARED.refused[path] = (stamp, problems)
        last = cached or stored
        log.error("mailfleet_domains: %s refused (%s); %s", path, "; ".join(problems[:5]),
                  "its last good version stays in service" if last else "it has no good version yet")
        _alert(opts or {}, path, problems)
    last = cached or stored
    if last and not cached:
        _CACHE[path] = tuple(last)
    return last[2] if last else {}


_ALERTED = set()


def _alert(opts, path, problems):
    """One ``pillar_refused`` alert per refused version, in the background: a pillar compile
    must not wait for a webhook. Never raises."""
    key = (path, tuple(problems[:20]))
    if key in _ALERTED or not opts.get("conf_file"):
        return
    _ALERTED.add(key)

    def send():
        try:
            import salt.runner
            salt.runner.RunnerClient(opts).cmd("mailfleet_alert.send", [
                "pillar_refused", path, f"domain file refused, last good version kept: {problems[0]}"],
                kwarg={"details": {"file": path, "problems": problems[:50]}}, print_event=False)
        except Exception:  # noqa: BLE001
            log.exception("mailfleet_domains: alert for %s failed", path)

    import threading
    threading.Thread(target=send, name="mailfleet_domains_alert", daemon=True).start()


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
    try:  # atomic: workers racing here each leave a whole file
        mailfleet_files.write_atomic(target, msgpack.packb(entries, use_bin_type=True), fsync=False)
    except (OSError, TypeError, ValueError) as err:
        log.warning("mailfleet_domains: cannot write parse cache %s (%s)", target, err)


def folder_domains(folder, cachedir=None, opts=None):
    """``{path: {domain: wire form}}`` of every domain file in ``folder`` in service (good
    versions, or the last good one of a refused file). ``cachedir``: where to keep the parse
    cache between processes (None: memory only)."""
    out, seen, counts = {}, set(), {"parsed": 0}
    disk = _disk_entries(folder, cachedir)
    try:
        names = sorted(os.listdir(folder))
    except OSError as err:
        log.error("mailfleet_domains: cannot read %s: %s", folder, err)
        return out
    for name in names:
        if not name.endswith((".yaml", ".yml", ".sls")):
            continue
        path = os.path.join(folder, name)
        seen.add(path)
        try:
            out[path] = _domains_in(path, disk, counts, opts)
        except OSError as err:
            log.error("mailfleet_domains: %s unreadable (%s); its domains are left out", path, err)
    for gone in set(_CACHE) - seen:
        if os.path.dirname(gone) == folder:
            del _CACHE[gone]
            _SHARED.refused.pop(gone, None)
            counts["parsed"] += 1
    if counts["parsed"] or set(disk) - seen:
        _save_disk_cache(folder, cachedir)
    return out


def _owners_path(cachedir):
    return os.path.join(cachedir, "mailfleet_domains", "owners.json") if cachedir else None


def _load_owners(cachedir):
    target = _owners_path(cachedir)
    try:
        mtime = os.stat(target).st_mtime_ns
    except (OSError, TypeError):
        return _SHARED.owners.get(target, (None, {}))[1]
    seen = _SHARED.owners.get(target)
    if seen and seen[0] == mtime:
        return seen[1]
    try:
        with open(target, encoding="utf-8") as handle:
            owners = json.load(handle)
        owners = owners if isinstance(owners, dict) else {}
    except (OSError, ValueError):
        owners = {}
    _SHARED.owners[target] = (mtime, owners)
    return owners


def _save_owners(cachedir, owners):
    target = _owners_path(cachedir)
    if not target:
        _SHARED.owners[target] = (None, owners)
        return
    try:
        mailfleet_files.write_json(target, owners, fsync=False)
        _SHARED.owners[target] = (os.stat(target).st_mtime_ns, owners)
    except OSError as err:
        log.warning("mailfleet_domains: cannot write %s (%s)", target, err)


def catalog(folders, cachedir=None, opts=None):
    """``{domain: wire form}`` of every domain in service across ``folders``: one version
    per domain. A domain declared in more than one file stays with the file that declared it
    first (the recorded owner)."""
    declared = {}  # domain -> [(path, wire)]
    for folder in folders:
        for path, domains in folder_domains(folder, cachedir, opts).items():
            for domain, wire in domains.items():
                declared.setdefault(str(domain).lower().rstrip("."), []).append((path, domain, wire))
    owners = _load_owners(cachedir)
    new_owners = dict(owners)
    out = {}
    for key, decls in declared.items():
        if len(decls) == 1:
            path, domain, wire = decls[0]
            out[domain] = wire
            new_owners[key] = path
            continue
        paths = [p for p, _d, _w in decls]
        # The recorded owner keeps it; with none recorded (a master whose cache was wiped,
        # or two files added at once) the first declaration in folder and file order.
        owner = owners.get(key) if owners.get(key) in paths else paths[0]
        keep = [d for d in decls if d[0] == owner]
        new_owners[key] = owner
        problem = (f"{mailfleet_pillar.PREFIX}:domains:{key}: declared in {len(paths)} files "
                   f"({', '.join(paths)}); {owner} keeps it, the others are refused")
        log.error("mailfleet_domains: %s", problem)
        for path in paths:
            if path != owner:
                _alert(opts or {}, path, [problem])
        out[keep[0][1]] = keep[0][2]
    for key in set(new_owners) - set(declared):
        del new_owners[key]  # a domain whose file is gone
    if new_owners != owners:
        _save_owners(cachedir, new_owners)
    return out


def domains_for(minion_id, folder, cachedir=None):
    """{domain: wire form} of every domain in ``folder`` whose ``hosts`` names ``minion_id``."""
    return {d: w for d, w in catalog([folder], cachedir).items() if _serves(w, minion_id)}


def _serves(wire, minion_id):
    hosts = (wire[0] if isinstance(wire[0], dict) else {}).get("hosts") or []
    return isinstance(hosts, list) and minion_id in hosts  # a list of exact ids (validated)


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


def ext_pillar(minion_id, pillar, path=None, dkim_dir=None, **kwargs):
    if not path:
        log.error("mailfleet_domains: no path configured")
        return {}
    opts = globals().get("__opts__", {})
    cachedir = kwargs.get("cachedir") or opts.get("cachedir")
    folders = [path] if isinstance(path, str) else list(path)
    served = {d: w for d, w in catalog(folders, cachedir, opts).items() if _serves(w, minion_id)}
    if not served:
        return {}
    out = {"mailfleet": {"domains": _for_the_wire(served, kwargs.get("pack_over", DEFAULT_PACK_OVER))}}
    base = dkim_dir or opts.get("mailfleet_dkim_dir") or DEFAULT_DKIM_DIR
    keys = {d: k for d in served for k in [dkim_for(d, base)] if k}
    if keys:
        out["mailfleet"]["dkim"] = keys
    return out
