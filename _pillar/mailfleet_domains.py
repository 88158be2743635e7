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

Secrets in a domain file (password hashes) therefore reach only the hosts named in it.
The same goes for DKIM: for every served domain whose key the master keeps (the
``mailfleet_dkim`` runner, under ``mailfleet_dkim_dir``, default
``/var/lib/mailfleet-master/dkim``), the host receives the signing selector and its private
key under ``mailfleet:dkim:<domain>`` (``selector``, ``key_type``, ``key``).
Files are parsed with libyaml's C loader and cached by (mtime, size), so a fleet with
10,000 domain files re-reads only what changed.
"""
import json
import logging
import os
import re

import yaml

log = logging.getLogger(__name__)
__virtualname__ = "mailfleet_domains"

try:
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml is part of PyYAML's wheels
    _Loader = yaml.SafeLoader

# path -> (mtime_ns, size, {domain: data}); lives as long as the master's worker.
_CACHE = {}


def __virtual__():
    return __virtualname__


def _domains_in(path):
    stat = os.stat(path)
    cached = _CACHE.get(path)
    if cached and cached[0] == stat.st_mtime_ns and cached[1] == stat.st_size:
        return cached[2]
    with open(path, "rb") as handle:
        data = yaml.load(handle, Loader=_Loader) or {}
    domains = ((data.get("mailfleet") or {}).get("domains") or {}) if isinstance(data, dict) else {}
    if not isinstance(domains, dict):
        log.error("mailfleet_domains: %s: mailfleet:domains is not a mapping; ignored", path)
        domains = {}
    _CACHE[path] = (stat.st_mtime_ns, stat.st_size, domains)
    return domains


def domains_for(minion_id, folder):
    """{domain: data} of every domain file in ``folder`` whose ``hosts`` names ``minion_id``."""
    served, seen = {}, set()
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
            domains = _domains_in(path)
        except (OSError, yaml.YAMLError) as err:
            # A broken file must not hand a host a partial view silently: say which file.
            log.error("mailfleet_domains: %s unreadable (%s); its domains are left out", path, err)
            continue
        for domain, data in domains.items():
            hosts = (data or {}).get("hosts") or []
            if minion_id in hosts:
                served[domain] = data
    for gone in set(_CACHE) - seen:
        if os.path.dirname(gone) == folder:
            del _CACHE[gone]
    return served


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
    for folder in [path] if isinstance(path, str) else list(path):
        for domain, data in domains_for(minion_id, folder).items():
            if domain in served:
                log.error("mailfleet_domains: %s is declared in more than one folder; "
                          "the copy in %s is ignored", domain, folder)
                continue
            served[domain] = data
    if not served:
        return {}
    out = {"mailfleet": {"domains": served}}
    base = dkim_dir or globals().get("__opts__", {}).get("mailfleet_dkim_dir") or DEFAULT_DKIM_DIR
    keys = {d: k for d in served for k in [dkim_for(d, base)] if k}
    if keys:
        out["mailfleet"]["dkim"] = keys
    return out
