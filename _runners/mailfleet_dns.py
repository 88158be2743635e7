"""
Publish and verify the DNS records of every mail domain, from the master.

Publishing runs here and not on the minions, so hosts never race on shared RRsets, and the
TSIG key never leaves the master. For every domain found in the targeted minions' pillar
(``mailfleet:domains``) the runner builds the desired records
(``mailfleet_records.build``) from the pillar, the facts of the hosts that serve it
(their addresses, from grains) and the DKIM selectors kept by ``mailfleet_dkim`` (if any),
compares them with what the authoritative server holds, and sends one RFC 2136 update per
zone, signed with TSIG, that touches only the RRsets that differ and only names/types
mailfleet owns. ``mode=manual`` prints a zone-file snippet per domain instead.

Master configuration (``config/master.d/mailfleet.conf`` documents them)::

    mailfleet_dns_server: 198.18.0.2          # authoritative server taking the updates
    mailfleet_dns_port: 53
    mailfleet_dns_resolver: 198.18.0.2        # what verify() asks (default: the server)
    mailfleet_tsig_keyfile: /path/tsig.key    # BIND key syntax (key "name" {...};)
    mailfleet_dkim_dir: /var/lib/mailfleet-master/dkim

CLI Example:

.. code-block:: bash

    salt-run mailfleet_dns.publish                 # RFC 2136 updates, signed with TSIG
    salt-run mailfleet_dns.publish test=True       # what would change, nothing sent
    salt-run mailfleet_dns.publish mode=manual     # zone snippets to paste by hand
    salt-run mailfleet_dns.verify                  # record by record + FCrDNS, as a table

Every return holds ``retcode`` (0 or 1): salt-run exits with it, so scripts can tell a
refused publish or a failed verification from success.
"""
import ipaddress
import json
import logging
import os

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_ask
import mailfleet_dkimkeys as dkim
import mailfleet_dns_plan as _plan  # key file, host facts, zones, updates, verify rows
import mailfleet_records as records
import mailfleet_table

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_dns"

DEFAULT_SERVER = "198.18.0.2"
DEFAULT_DKIM_DIR = "/var/lib/mailfleet-master/dkim"
MACHINE_OUTPUTS = ("json", "yaml", "raw", "pprint", "newline_values_only", "key", "txt")


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("publish", "verify", "fleet_data")


def __virtual__():
    try:
        import dns.update  # noqa: F401
    except ImportError:
        return False, "mailfleet_dns needs dnspython"
    return __virtualname__


# ---------------------------------------------------------------------------------------
# Pure parts (unit-tested in tests/unit/test_dns_runner.py)
# ---------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------
# DNS I/O (dnspython)
# ---------------------------------------------------------------------------------------


def _server():
    return (str(__opts__.get("mailfleet_dns_server") or DEFAULT_SERVER),
            int(__opts__.get("mailfleet_dns_port") or 53))


def _resolver_addr():
    return (str(__opts__.get("mailfleet_dns_resolver") or _server()[0]),
            int(__opts__.get("mailfleet_dns_resolver_port") or _server()[1]))


def _query(addr, name, rtype, timeout=3.0):
    """``(rcode, [rdata text])`` asked directly of ``addr``; TCP when truncated."""
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    msg = dns.message.make_query(name, rtype)
    msg.flags |= dns.flags.RD
    ans = dns.query.udp(msg, addr[0], port=addr[1], timeout=timeout)
    if ans.flags & dns.flags.TC:
        ans = dns.query.tcp(msg, addr[0], port=addr[1], timeout=timeout)
    out = []
    for rrset in ans.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rtype) and \
                rrset.name.to_text().lower() == records.fqdn(name):
            out += [r.to_text() for r in rrset]
    return dns.rcode.to_text(ans.rcode()), out


def _observe(addr, keys):
    obs = {}
    for name, rtype in keys:
        rcode, values = _query(addr, name, rtype)
        if rcode not in ("NOERROR", "NXDOMAIN"):
            raise RuntimeError(f"{name} {rtype}: {addr[0]} answered {rcode}")
        obs[(name, rtype)] = values
    return obs


def _resolve_txt(addr):
    def resolve(name):
        try:
            return [records.txt_value(v) for v in _query(addr, name, "TXT")[1]]
        except Exception:  # noqa: BLE001
            return []
    return resolve


def _find_zone(addr, name):
    """The zone holding ``name``, from the SOA the server returns (answer or authority)."""
    import dns.message
    import dns.query
    import dns.rdatatype

    labels = name.rstrip(".").split(".")
    for i in range(len(labels)):
        cand = ".".join(labels[i:]) + "."
        ans = dns.query.udp(dns.message.make_query(cand, "SOA"), addr[0], port=addr[1], timeout=3)
        for rrset in ans.answer:
            if rrset.rdtype == dns.rdatatype.SOA:
                return rrset.name.to_text().lower()
    return None


def _keyring():
    import dns.name
    import dns.tsig

    path = __opts__.get("mailfleet_tsig_keyfile")
    if not path:
        raise RuntimeError("mailfleet_tsig_keyfile is not set in the master config")
    try:
        with open(path, encoding="ascii") as handle:
            name, alg, secret = _plan.parse_tsig_keyfile(handle.read())
    except OSError as err:
        raise RuntimeError(f"TSIG key file {path}: {err.strerror}") from err
    except ValueError as err:
        raise RuntimeError(f"TSIG key file {path}: {err}") from err
    return dns.tsig.Key(dns.name.from_text(name), secret, dns.name.from_text(alg))


def _send(zone, ops):
    import dns.query
    import dns.rcode
    import dns.update

    key = _keyring()
    upd = dns.update.UpdateMessage(zone, keyring=key)
    for op, name, rtype, rdata, ttl in ops:
        if op == "delete":
            upd.delete(name, rtype, rdata)
        else:
            upd.add(name, ttl, rtype, rdata)
    host, port = _server()
    ans = dns.query.tcp(upd, host, port=port, timeout=10)
    rcode = dns.rcode.to_text(ans.rcode())
    if rcode != "NOERROR":
        raise RuntimeError(f"update of zone {zone} refused by {host}: {rcode}")


# ---------------------------------------------------------------------------------------
# Fleet data: pillar and grains of the targeted minions, DKIM selectors
# ---------------------------------------------------------------------------------------


def _grains(tgt, tgt_type):
    """Grains of every matched host; one that is reconnecting is waited for, up to
    ``mailfleet_ask_bound`` seconds (master config, default 60), then left out with a warning."""
    ret, missing = mailfleet_ask.ask(__opts__, tgt, "grains.items", tgt_type=tgt_type,
                                     bound=float(__opts__.get("mailfleet_ask_bound", 60)),
                                     answered=lambda _m, g: isinstance(g, dict))
    if missing:
        log.warning("mailfleet_dns: no grains from %s within the bound: their records are not built", ", ".join(missing))
    return ret


def _pillar(minion, grains):
    """The minion's pillar compiled here, unmasked (the same data the minion receives)."""
    import salt.pillar

    return salt.pillar.get_pillar(__opts__, grains, minion,
                                  saltenv=__opts__.get("saltenv") or "base").compile_pillar()


def fleet_data(tgt="*mail*", tgt_type="glob", domains=None):
    """
    ``(domains, facts)`` of the targeted minions: the domains they serve (from their pillar)
    and each host's name and addresses (from the master-owned inventory). mailfleet_dkim
    asks for it through ``__salt__``.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_dns.fleet_data domains=example-a.test
    """
    grains = _grains(tgt, tgt_type)
    if not grains:
        raise RuntimeError(f"no minion matched {tgt!r} or none answered")
    pillars = {m: _pillar(m, g) for m, g in grains.items()}
    facts = _plan.inventory_facts(pillars, grains)
    served = _plan.merge_domains(pillars)
    only = _plan.domain_list(domains)
    if only is not None:
        served = {d: v for d, v in served.items() if d.lower().rstrip(".") in only}
    return served, facts


def dkim_entries(domain):
    """The domain's published selectors from the DKIM state the mailfleet_dkim runner keeps
    (``<dkim_dir>/<domain>/state.json``); none when it has no state."""
    base = __opts__.get("mailfleet_dkim_dir") or DEFAULT_DKIM_DIR
    path = os.path.join(base, domain.rstrip(".").lower(), "state.json")
    try:
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return []
    except OSError as err:
        # Unreadable (a directory, an I/O error, permissions for a non-root master): the
        # domain's DKIM records are unknown, so nothing may be published for it.
        raise RuntimeError(f"mailfleet_dkim_dir ({base}): DKIM state of {domain} "
                           f"unreadable: {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise RuntimeError(f"mailfleet_dkim_dir ({base}): DKIM state of {domain} "
                           f"is not JSON: {path}: {err}") from err
    problems = dkim.validate_state(state)
    if problems:
        raise RuntimeError(f"mailfleet_dkim_dir ({base}): {path}: {'; '.join(problems)}")
    return dkim.dns_entries(state)


def desired_records(domains, facts, resolve_txt=None):
    """``{domain: build result or {"error": text}}``."""
    out = {}
    for domain, data in sorted(domains.items()):
        try:
            out[domain] = records.build(domain, data, facts, dkim=dkim_entries(domain),
                                        managed_domains=list(domains), resolve_txt=resolve_txt)
        except records.RecordError as err:
            out[domain] = {"error": "; ".join(err.problems)}
        except RuntimeError as err:
            out[domain] = {"error": str(err)}
    return out


def _show(text):
    if __opts__.get("quiet") or __opts__.get("output") in MACHINE_OUTPUTS:
        return
    print(text, flush=True)


# ---------------------------------------------------------------------------------------
# Salt entry points
# ---------------------------------------------------------------------------------------


def publish(tgt="*mail*", mode="rfc2136", test=False, tgt_type="glob", domains=None):
    """
    Publish the records of every domain served by the targeted minions.

    mode
        ``rfc2136`` (default): TSIG-signed dynamic updates to ``mailfleet_dns_server``,
        only for RRsets that differ. ``manual``: print a zone snippet per domain.
    test
        ``True``: compute and show the changes, send nothing.
    domains
        Only these domains (comma-separated or a list); default every served domain.

    Any domain with a pillar error or a failed preflight stops the whole run before
    anything is sent (the problems are returned under ``errors``).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_dns.publish
        salt-run mailfleet_dns.publish mode=manual
    """
    if mode not in ("rfc2136", "manual"):
        __context__["retcode"] = 1
        raise TypeError(f"mode must be rfc2136 or manual, not {mode!r}")
    domains, facts = fleet_data(tgt, tgt_type, domains)
    server = _server()
    desired = desired_records(domains, facts, _resolve_txt(_resolver_addr()))
    errors = {d: r["error"] for d, r in desired.items() if "error" in r}

    if mode == "manual":
        snippets = {d: records.zone_snippet(d, r) for d, r in desired.items() if "error" not in r}
        _show("\n".join(snippets.values()))
        __context__["retcode"] = 0
        if errors:
            __context__["retcode"] = 1
            _show("\n".join(f"ERROR {d}: {e}" for d, e in errors.items()))
        return {"mode": "manual", "snippets": snippets, "errors": errors,
                "retcode": 1 if errors else 0}

    plans, changes = {}, {}
    for domain, want in desired.items():
        if "error" in want:
            continue
        keys = set(want["owned"]) | set(want["checks"])
        try:
            observed = _observe(server, sorted(keys))
        except Exception as err:  # noqa: BLE001
            errors[domain] = f"cannot read DNS from {server[0]}: {err}"
            continue
        problems = records.preflight(want, observed)
        if problems:
            errors[domain] = "; ".join(problems)
            continue
        result = records.diff(want, observed)
        zones = [want["domain"]]
        plan = _plan.plan_updates(want, result, zones)
        if None in plan:
            for op in plan.pop(None):
                zone = _find_zone(server, op[1])
                if zone is None:
                    errors[domain] = f"no zone on {server[0]} holds {op[1]}"
                    break
                plan.setdefault(zone, []).append(op)
        plans[domain] = plan
        changes[domain] = [f"{op} {name} {rtype} {rdata}"
                           for ops in plan.values() for op, name, rtype, rdata, _ in ops]

    if errors:
        __context__["retcode"] = 1
        _show("\n".join(f"ERROR {d}: {e}" for d, e in sorted(errors.items()))
              + "\nnothing published")
        return {"mode": mode, "test": bool(test), "errors": errors, "changes": changes,
                "published": False, "retcode": 1}

    sent = []
    if not test:
        for domain, plan in sorted(plans.items()):
            for zone, ops in sorted(plan.items()):
                if ops:
                    _send(zone, ops)
                    sent.append(zone)
    lines = [f"{d}: {c}" for d, cs in sorted(changes.items()) for c in cs] or ["no changes"]
    _show(("(test) " if test else "") + "\n".join(lines))
    __context__["retcode"] = 0
    return {"mode": mode, "test": bool(test), "errors": {}, "changes": changes,
            "published": bool(sent) and not test, "zones": sent, "retcode": 0}


def _fcrdns(addr, facts):
    """{host: {ip: (ok, detail)}}: PTR of each address names the host, whose A/AAAA
    includes the address again."""
    out = {}
    for host, fct in sorted(facts.items()):
        name = records.host_name(host, fct)
        for (rev, _), _names in records.expected_ptrs({host: fct}).items():
            ip = [a for a in fct.get("ipv4", []) + fct.get("ipv6", [])
                  if ipaddress.ip_address(a).reverse_pointer + "." == rev][0]
            try:
                _, ptrs = _query(addr, rev, "PTR")
                ptrs = [records.fqdn(p) for p in ptrs]
                if name not in ptrs:
                    out.setdefault(host, {})[ip] = (False, f"PTR {ptrs or 'none'}, want {name}")
                    continue
                rtype = "A" if ipaddress.ip_address(ip).version == 4 else "AAAA"
                _, fwd = _query(addr, name, rtype)
                ok = ip in [str(ipaddress.ip_address(f)) for f in fwd]
                out.setdefault(host, {})[ip] = (
                    ok, f"PTR {name} {rtype} {', '.join(fwd) or 'none'}")
            except Exception as err:  # noqa: BLE001
                out.setdefault(host, {})[ip] = (False, f"lookup failed: {err}")
    return out


def _fetch_policy(domain, ip, cafile, timeout=10):
    """``(status, body)`` of https://mta-sts.<domain>/.well-known/mta-sts.txt asked of
    ``ip`` (name sent as SNI and Host, certificate checked against that name)."""
    import http.client
    import socket
    import ssl

    host = f"mta-sts.{domain.rstrip('.')}"
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection((ip, 443), timeout=timeout)
    try:
        sock = ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    conn = http.client.HTTPSConnection(host, 443, timeout=timeout, context=ctx)
    conn.sock = sock
    try:
        conn.request("GET", "/.well-known/mta-sts.txt", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.read(65536)
    finally:
        conn.close()


def _mta_sts_policies(desired):
    """{domain: {"https://mta-sts.<domain>/... @ip": (ok, detail)}} for every domain that
    publishes MTA-STS: the policy each address of mta-sts.<domain> serves. CA bundle:
    master setting ``mailfleet_https_cafile`` (the lab sets ``mailfleet_lab_ca``), else
    the system's."""
    cafile = __opts__.get("mailfleet_https_cafile") or __opts__.get("mailfleet_lab_ca") or None
    out = {}
    for domain, want in sorted(desired.items()):
        policy = (want.get("files") or {}).get("mta-sts.txt") if "error" not in want else None
        if not policy:
            continue
        zone = want["domain"]
        ips = [a for rtype in ("A", "AAAA")
               for a in want["rrsets"].get((f"mta-sts.{zone}", rtype), [])]
        for ip in ips:
            where = f"https://mta-sts.{zone.rstrip('.')}/.well-known/mta-sts.txt @{ip}"
            try:
                status, body = _fetch_policy(zone, ip, cafile)
                verdict = _plan.policy_verdict(policy, status, body)
            except Exception as err:  # noqa: BLE001
                verdict = _plan.policy_verdict(policy, None, b"", error=str(err) or type(err).__name__)
            out.setdefault(domain, {})[where] = verdict
    return out


def verify(tgt="*mail*", tgt_type="glob", domains=None):
    """
    What the world sees, record by record: every owned and checked record of every
    domain served by the targeted minions, asked through ``mailfleet_dns_resolver``
    (missing, wrong, extra), and forward-confirmed reverse DNS of every host address.
    Prints a table; any problem marks the run failed.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_dns.verify
        salt-run mailfleet_dns.verify --out=json
    """
    domains, facts = fleet_data(tgt, tgt_type, domains)
    addr = _resolver_addr()
    desired = desired_records(domains, facts, _resolve_txt(addr))
    results = {}
    for domain, want in desired.items():
        if "error" in want:
            results[domain] = {"error": want["error"]}
            continue
        try:
            observed = _observe(addr, sorted(set(want["owned"]) | set(want["checks"])))
        except Exception as err:  # noqa: BLE001
            results[domain] = {"error": f"cannot query {addr[0]}: {err}"}
            continue
        results[domain] = {"diff": records.diff(want, observed)}
    fcrdns = _fcrdns(addr, facts)
    rows, bad = _plan.verify_rows(results, fcrdns)
    policies = _mta_sts_policies(desired)
    for domain, checks in sorted(policies.items()):
        for where, (ok, detail) in sorted(checks.items()):
            rows.append((domain, where, "POLICY", "ok" if ok else "WRONG", detail))
            bad += 0 if ok else 1
    _show(mailfleet_table.render(("DOMAIN/HOST", "NAME", "TYPE", "RESULT", "DETAIL"), rows)
          + f"\n{len(rows) - bad} ok, {bad} problem(s)")
    __context__["retcode"] = 1 if bad else 0
    out = {"ok": not bad, "problems": bad, "domains": {}, "fcrdns": {},
           "retcode": 1 if bad else 0}
    for domain, res in results.items():
        if "error" in res:
            out["domains"][domain] = {"error": res["error"]}
        else:
            out["domains"][domain] = {k: [{x: e[x] for x in ("name", "type", "desired", "observed")}
                                          for e in v] for k, v in res["diff"].items()}
    out["fcrdns"] = {h: {ip: {"ok": ok, "detail": d} for ip, (ok, d) in chk.items()}
                     for h, chk in fcrdns.items()}
    out["mta_sts"] = {d: {w: {"ok": ok, "detail": t} for w, (ok, t) in chk.items()}
                      for d, chk in policies.items()}
    return out
