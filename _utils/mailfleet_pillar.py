"""
mailfleet's pillar validator for mail domains: one check for the ext_pillar on the master
(a domain file is refused before any host receives it) and for ``mail.validate`` /
``mail.vusers`` on the hosts (nothing is written from a pillar that does not pass).

``validate_pillar(cfg)`` takes the ``mailfleet`` pillar dict and returns the normalised model
(punycode domain names, lower-case local parts, quotas in bytes, implicit postmaster@/abuse@
aliases) with every problem named by its pillar path. Pure functions, no Salt.

Refused on purpose, beyond the RFCs' syntax: ``hosts`` that is not a list of exact minion ids
(a string would make ``minion_id in hosts`` a substring test), local parts with ``/``
(Dovecot's ``%n`` would make it a path segment: ``bob/.Sent`` would read bob's Sent folder),
control characters in any text.
"""
import json
import re

from mailfleet_pillar_values import (  # the value parsers this validator applies
    BIGINT_MAX, CONTROL, check_local_part, check_password, format_quota, idna_domain, parse_address,
    parse_quota,
)

PREFIX = "mailfleet"


class ValidationError(Exception):
    """The pillar is invalid: ``errors`` lists every problem, each naming its pillar path."""

    def __init__(self, errors, warnings=()):
        self.errors = list(errors)
        self.warnings = list(warnings)
        super().__init__("\n".join(self.errors))


class _Report:
    """Ordered, de-duplicated errors and warnings."""

    def __init__(self):
        self.errors = {}
        self.warnings = {}

    def error(self, path, msg):
        self.errors.setdefault(f"{path}: {msg}", None)

    def warn(self, path, msg):
        self.warnings.setdefault(f"{path}: {msg}", None)


# --------------------------------------------------------------------------- parsing


def _text(value, path, report, field, maxlen=255, default=""):
    if type(value) is str and len(value) <= maxlen and value.isprintable():
        return value  # printable: no control characters
    if value is None:
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        report.error(f"{path}:{field}", f"must be a string, not {type(value).__name__}")
        return default
    if len(value) > maxlen:
        report.error(f"{path}:{field}", f"longer than {maxlen} characters")
    if CONTROL.search(value):
        report.error(f"{path}:{field}", "control characters not allowed")
    return value


def _bmp_text(value, path, report, field):
    # domain.description is a utf8mb3 column in PostfixAdmin 3.3.13: no 4-byte characters
    value = _text(value, path, report, field)
    if any(ord(c) > 0xFFFF for c in value):
        report.error(f"{path}:{field}", "characters outside the Basic Multilingual Plane (PostfixAdmin's column is utf8mb3)")
    return value


def _bool(value, path, report, default=True):
    if value is None:
        return default
    if not isinstance(value, bool):
        report.error(path, f"must be true or false, not {value!r}")
        return default
    return value


# ------------------------------------------------------------------------ validation


MINION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


def hosts_problem(hosts):
    """Why ``hosts`` is not a list of exact minion ids, or None. A string is refused: the
    ext_pillar's ``minion_id in hosts`` would be a substring test on it."""
    if isinstance(hosts, str):
        return f"must be a list of exact minion ids, not the string {hosts!r} (write [{hosts}])"
    if not isinstance(hosts, list):
        return "must be a list of exact minion ids"
    for h in hosts:
        if not isinstance(h, str) or not MINION_ID.fullmatch(h):
            return f"{h!r} is not a minion id (letters, digits, '.', '_', '-'; no globs)"
    return None


def validate_file_domains(domains):
    """Problems (``"<pillar path>: <message>"``) of one domain file's ``mailfleet:domains``,
    as the ext_pillar checks it before any host receives it: the domain names, ``hosts``, and
    everything ``validate_pillar`` checks of a domain. Targets in other files' domains are
    not errors here (they are warnings, as external addresses)."""
    if not isinstance(domains, dict):
        return [f"{PREFIX}:domains: must be a mapping of domain name to settings"]
    problems = []
    for name, data in domains.items():
        if not isinstance(data, dict) or data.get("hosts") is None:
            problems.append(f"{PREFIX}:domains:{name}:hosts: missing (the minion ids that serve it)")
    _model, errors, _warnings = validate_pillar({"domains": domains, "postmaster": "postmaster@mailfleet.invalid"})
    return problems + errors


def validate_pillar(cfg):
    """Validate the ``mailfleet`` pillar dict as a whole.

    Returns ``(model, errors, warnings)``; ``errors`` and ``warnings`` are lists of
    ``"<pillar path>: <message>"``. ``model`` is the normalised pillar (punycode domain
    names, lower-case local parts, quotas in bytes, implicit postmaster@/abuse@ aliases
    added); it is only meaningful when ``errors`` is empty.
    """
    rep = _Report()
    model = {"exclusive": False, "postmaster": None, "domains": {}}
    if not isinstance(cfg, dict):
        rep.error(PREFIX, "missing or not a mapping")
        return model, list(rep.errors), list(rep.warnings)

    model["exclusive"] = _bool(cfg.get("exclusive"), f"{PREFIX}:exclusive", rep, default=False)

    pm_raw = cfg.get("postmaster")
    pm = None
    if pm_raw is not None:
        try:
            pm = "%s@%s" % parse_address(pm_raw)
        except ValueError as exc:
            rep.error(f"{PREFIX}:postmaster", str(exc))
    model["postmaster"] = pm

    domains_raw = cfg.get("domains")
    if domains_raw is None:
        rep.error(f"{PREFIX}:domains", "missing (an empty mapping {} declares no domains)")
        domains_raw = {}
    elif not isinstance(domains_raw, dict):
        rep.error(f"{PREFIX}:domains", "must be a mapping of domain name to settings")
        domains_raw = {}

    domains = model["domains"]
    alias_domain_owner = {}  # alias domain -> (path, target domain)
    for dkey, dcfg in domains_raw.items():
        dpath = f"{PREFIX}:domains:{dkey}"
        try:
            dom = idna_domain(str(dkey))
        except ValueError as exc:
            rep.error(dpath, str(exc))
            continue
        if dom in domains:
            rep.error(dpath, f"duplicate domain {dom} (also {domains[dom]['path']})")
            continue
        if dcfg is None:
            dcfg = {}
        if not isinstance(dcfg, dict):
            rep.error(dpath, "must be a mapping")
            continue
        dcfg = _unpacked(dcfg, dpath, rep)
        domains[dom] = d = _validate_domain(dom, dpath, dcfg, rep)
        for adom, apath in d["alias_domains"].items():
            if adom in alias_domain_owner:
                rep.error(apath, f"alias domain {adom} also declared at {alias_domain_owner[adom][0]}")
            else:
                alias_domain_owner[adom] = (apath, dom)

    for adom, (apath, target) in alias_domain_owner.items():
        if adom == target:
            rep.error(apath, f"alias domain {adom} points at itself")
        elif adom in domains:
            rep.error(apath, f"alias domain {adom} is also a real domain ({domains[adom]['path']})")

    # postmaster@ and abuse@ (RFC 2142) for every domain that does not declare them
    lacking = []
    for dom, d in domains.items():
        for local in ("postmaster", "abuse"):
            if local in d["mailboxes"] or local in d["aliases"]:
                continue
            if pm is None:
                lacking.append((f"{local}@{dom}", d["path"]))
                continue
            d["aliases"][local] = {
                "path": f"{d['path']}:aliases:{local} (implicit, from {PREFIX}:postmaster)",
                "targets": [pm],
                "target_paths": [f"{PREFIX}:postmaster"],
                "implicit": True,
            }

    if lacking and pm_raw is None:
        more = f" and {len(lacking) - 1} more" if len(lacking) > 1 else ""
        rep.error(f"{PREFIX}:postmaster", f"missing; needed for {lacking[0][0]} ({lacking[0][1]} does not declare it){more}")

    _check_targets(model, {a: t for a, (p, t) in alias_domain_owner.items()}, rep)
    return model, list(rep.errors), list(rep.warnings)


PACKED_KEY = "packed_json"  # set by the mailfleet_domains ext_pillar at hosting size


def _unpacked(dcfg, dpath, rep):
    """The domain's data with ``mailboxes`` and ``aliases`` back from the JSON string the
    ext_pillar packs them into for a host that receives many (see _pillar/mailfleet_domains)."""
    text = dcfg.get(PACKED_KEY)
    if text is None:
        return dcfg
    try:
        inner = json.loads(text) if isinstance(text, str) else None
    except ValueError as exc:
        rep.error(f"{dpath}:{PACKED_KEY}", f"not valid JSON ({exc}); reserved for the mailfleet_domains ext_pillar")
        return dcfg
    if not isinstance(inner, dict):
        rep.error(f"{dpath}:{PACKED_KEY}", "must be a JSON object; reserved for the mailfleet_domains ext_pillar")
        return dcfg
    both = sorted(k for k in inner if k in dcfg)
    if both:
        rep.error(f"{dpath}:{PACKED_KEY}", f"{', '.join(both)} given both packed and as written")
        return dcfg
    out = {k: v for k, v in dcfg.items() if k != PACKED_KEY}
    out.update(inner)
    return out


def _validate_domain(dom, dpath, dcfg, rep):
    d = {
        "path": dpath,
        "description": _bmp_text(dcfg.get("description"), dpath, rep, "description"),
        "active": _bool(dcfg.get("active"), f"{dpath}:active", rep),
        "quota": 0,
        "maxquota": 0,
        "hosts": None,
        "retention": None,
        "mailboxes": {},
        "aliases": {},
        "alias_domains": {},
    }
    # other keys (dkim, dns, tls, ...) belong to other concerns of the same domain file
    hosts = dcfg.get("hosts")
    if hosts is not None:
        problem = hosts_problem(hosts)
        if problem:
            rep.error(f"{dpath}:hosts", problem)
        else:
            d["hosts"] = [h.lower() for h in hosts]
    for field in ("quota", "maxquota"):
        if dcfg.get(field) is not None:
            try:
                d[field] = parse_quota(dcfg[field])
            except ValueError as exc:
                rep.error(f"{dpath}:{field}", str(exc))
    if d["maxquota"] and not d["quota"]:
        rep.error(f"{dpath}:quota", f"unlimited (0) default mailbox quota exceeds maxquota {format_quota(d['maxquota'])}")
    elif d["maxquota"] and d["quota"] > d["maxquota"]:
        rep.error(f"{dpath}:quota", f"{format_quota(d['quota'])} exceeds maxquota {format_quota(d['maxquota'])}")
    for field in ("quota", "maxquota"):
        if d[field] > BIGINT_MAX:
            rep.error(f"{dpath}:{field}", "too large")

    ret = dcfg.get("retention")
    if ret is not None:
        if not isinstance(ret, dict):
            rep.error(f"{dpath}:retention", "must be a mapping (purge_after_days: N)")
        else:
            days = ret.get("purge_after_days")
            if days is not None:
                if isinstance(days, bool) or not isinstance(days, int) or days < 0:
                    rep.error(f"{dpath}:retention:purge_after_days", f"must be a whole number of days >= 0, not {days!r}")
                else:
                    d["retention"] = days
            for k in ret:
                if k != "purge_after_days":
                    rep.error(f"{dpath}:retention:{k}", "unknown setting (only purge_after_days)")

    # mailboxes
    mailboxes = dcfg.get("mailboxes") or {}
    if not isinstance(mailboxes, dict):
        rep.error(f"{dpath}:mailboxes", "must be a mapping of local part to settings")
        mailboxes = {}
    d_mailboxes, d_quota, d_maxquota = d["mailboxes"], d["quota"], d["maxquota"]
    room = 254 - len(dom)  # longest local part that keeps the address within 255 characters
    for mkey, mcfg in mailboxes.items():
        mpath = f"{dpath}:mailboxes:{mkey}"
        local = _local_key(mkey, dom, mpath, rep, allow_catchall=False)
        if local is None:
            continue
        if local in d_mailboxes:
            rep.error(mpath, f"duplicate mailbox {local}@{dom} (also {d_mailboxes[local]['path']})")
            continue
        if mcfg is None:
            mcfg = {}
        if not isinstance(mcfg, dict):
            rep.error(mpath, "must be a mapping (name, password, quota, active)")
            continue
        pw = mcfg.get("password")
        why = check_password(pw)
        if why:
            rep.error(f"{mpath}:password", why)
        quota = d_quota
        mquota = mcfg.get("quota")
        if mquota is not None:
            try:
                quota = parse_quota(mquota)
            except ValueError as exc:
                rep.error(f"{mpath}:quota", str(exc))
            else:
                if d_maxquota and (quota == 0 or quota > d_maxquota):
                    rep.error(f"{mpath}:quota", f"{format_quota(quota) if quota else 'unlimited (0)'} exceeds the domain's maxquota {format_quota(d_maxquota)}")
        if quota > BIGINT_MAX:
            rep.error(f"{mpath}:quota", "too large")
        name = _text(mcfg.get("name"), mpath, rep, "name")  # utf8mb4 column (upgrade 1845)
        if len(local) > room:
            rep.error(mpath, "address longer than 255 characters")
        active = mcfg.get("active")
        if active is None:
            active = True
        elif active is not True and active is not False:
            active = _bool(active, f"{mpath}:active", rep)
        d_mailboxes[local] = {
            "path": mpath,
            "password": pw if isinstance(pw, str) else "",
            "name": name,
            "quota": quota,
            "active": active,
        }

    # aliases
    aliases = dcfg.get("aliases") or {}
    if not isinstance(aliases, dict):
        rep.error(f"{dpath}:aliases", "must be a mapping of local part to a list of targets")
        aliases = {}
    d_aliases = d["aliases"]
    for akey, targets in aliases.items():
        apath = f"{dpath}:aliases:{akey}"
        local = _local_key(akey, dom, apath, rep, allow_catchall=True)
        if local is None:
            continue
        if local in d_mailboxes:
            rep.error(apath, f"alias {local}@{dom} is also a mailbox ({d_mailboxes[local]['path']})")
            continue
        if local in d_aliases:
            rep.error(apath, f"duplicate alias {local}@{dom} (also {d_aliases[local]['path']})")
            continue
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets:
            rep.error(apath, "must be a non-empty list of target addresses")
            continue
        norm, tpaths = [], []
        for i, t in enumerate(targets):
            tpath = f"{apath}[{i}]"
            addr = None
            if type(t) is str:
                tl, _, td = t.rpartition("@")
                if td == dom:  # inside this domain (its canonical form): parse_address's answer
                    try:
                        addr = f"{check_local_part(tl)}@{dom}"
                    except ValueError:
                        pass  # parse_address says why
            if addr is None:
                try:
                    tl, td = parse_address(t)
                except ValueError as exc:
                    rep.error(tpath, str(exc))
                    continue
                addr = f"{tl}@{td}"
            if addr not in norm:
                norm.append(addr)
                tpaths.append(tpath)
        if len(",".join(norm)) > 65535:
            rep.error(apath, "too many targets (goto longer than 65535 bytes)")
        d_aliases[local] = {"path": apath, "targets": norm, "target_paths": tpaths, "implicit": False}

    # alias domains
    adoms = dcfg.get("alias_domains") or []
    if isinstance(adoms, str):
        adoms = [adoms]
    if not isinstance(adoms, list):
        rep.error(f"{dpath}:alias_domains", "must be a list of domain names")
        adoms = []
    for i, a in enumerate(adoms):
        apath = f"{dpath}:alias_domains[{i}]"
        try:
            adom = idna_domain(str(a))
        except ValueError as exc:
            rep.error(apath, str(exc))
            continue
        if adom in d["alias_domains"]:
            rep.error(apath, f"duplicate alias domain {adom}")
            continue
        d["alias_domains"][adom] = apath
    return d


def _local_key(key, dom, path, rep, allow_catchall):
    """The local part a mailbox or alias key names (a bare local part, or an address in
    ``dom``), or None with the problem reported under ``path``."""
    if type(key) is str and "@" not in key and key:
        try:
            return check_local_part(key)
        except ValueError:
            pass  # _local_in_domain reports it
    return _local_in_domain(str(key), dom, path, rep, allow_catchall=allow_catchall)


def _local_in_domain(key, dom, path, rep, allow_catchall):
    """Local part of a mailbox/alias key: ``local``, ``local@<this domain>`` or (aliases)
    ``@`` / ``@<this domain>`` for the catch-all ('' is returned for it)."""
    local = key
    if key == "@":
        local = ""
    elif "@" in key:
        local, _, kdom = key.rpartition("@")
        try:
            kdom_ascii = idna_domain(kdom)
        except ValueError as exc:
            rep.error(path, str(exc))
            return None
        if kdom_ascii != dom:
            rep.error(path, f"address {key} is not inside domain {dom}")
            return None
        if local == "" and not allow_catchall:
            rep.error(path, "a catch-all (@) cannot be a mailbox")
            return None
    if local == "":
        if allow_catchall:
            return ""
        rep.error(path, "empty local part")
        return None
    try:
        return check_local_part(local)
    except ValueError as exc:
        rep.error(path, str(exc))
        return None


def _check_targets(model, alias_domains, rep):
    """Alias targets exist (error inside our domains, warning outside) and no loops."""
    domains = model["domains"]
    ours = set(domains) | set(alias_domains)
    mailboxes = set()
    aliases = {}  # address -> (targets, path, target_paths)
    for dom, d in domains.items():
        at_dom = "@" + dom
        mailboxes.update([local + at_dom for local in d["mailboxes"]])
        for local, a in d["aliases"].items():
            aliases[local + at_dom] = a

    edges = {}  # alias address -> [alias addresses it expands to]
    for addr, a in aliases.items():
        out = []
        for t, tpath in zip(a["targets"], a["target_paths"]):
            # targets are normalised "local@domain": resolved through an alias domain
            local, _, dom = t.rpartition("@")
            r = t
            if dom in alias_domains:
                dom = alias_domains[dom]
                r = f"{local}@{dom}" if local else f"@{dom}"
            where = tpath
            if r in mailboxes:
                continue
            if r in aliases:
                out.append(r)
                continue
            if dom in ours:
                if f"@{dom}" in aliases:
                    rep.warn(where, f"target {t} has no mailbox or alias; only the catch-all @{dom} receives it")
                    out.append(f"@{dom}")
                else:
                    rep.error(where, f"target {t} does not exist (no mailbox or alias {r} declared)")
            else:
                rep.warn(where, f"target {t} is external (not checked)")
        edges[addr] = out

    # iterative DFS; a back edge is a loop
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(edges, WHITE)
    reported = set()
    for start in edges:
        if colour[start] != WHITE:
            continue
        if not edges[start]:  # expands to mailboxes and external addresses only
            colour[start] = BLACK
            continue
        stack = [(start, iter(edges[start]))]
        colour[start] = GREY
        onpath = [start]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
                onpath.pop()
                continue
            c = colour.get(nxt, BLACK)
            if c == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(edges[nxt])))
                onpath.append(nxt)
            elif c == GREY:
                cycle = onpath[onpath.index(nxt):] + [nxt]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    rep.error(aliases[nxt]["path"], "alias loop: " + " -> ".join(cycle))
