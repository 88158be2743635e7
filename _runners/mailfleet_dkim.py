"""
DKIM keys of the mail domains, made and kept on the master.

Keys and the rotation state of each domain live under ``mailfleet_dkim_dir`` (master
config, default ``/var/lib/mailfleet-master/dkim``; never under file_roots, pillar_roots
or git)::

    <dkim_dir>/<domain>/state.json          # mailfleet_dkim rotation state (selectors)
    <dkim_dir>/<domain>/<selector>.key      # private key, 0600 root

The ``mailfleet_domains`` ext_pillar hands the signing selector and its key to the hosts
that serve the domain, and only to them; ``salt/mail/rspamd.sls`` installs it for Rspamd.

``ensure`` drives each domain's state machine (``_utils/mailfleet_dkimkeys.py``) as far as
it can go now: a domain without a key gets one (RSA-2048), its record is published
(``mailfleet_dns.publish``), checked in DNS through the configured resolver, and only then
does signing switch to it. Every step is saved when it succeeded, so an interrupted run
resumes where it stopped. Then ``salt '*mail*' state.apply`` installs the keys.

CLI Example:

.. code-block:: bash

    salt-run mailfleet_dkim.ensure                   # keys for every served domain
    salt-run mailfleet_dkim.status
"""
import json
import logging
import os
import time

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
import mailfleet_files
import mailfleet_dkimkeys as dkim

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_dkim"

DEFAULT_DKIM_DIR = "/var/lib/mailfleet-master/dkim"
MAX_STEPS = 12


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("ensure", "status")


def __virtual__():
    return __virtualname__


def _dir():
    return __opts__.get("mailfleet_dkim_dir") or DEFAULT_DKIM_DIR


# ---------------------------------------------------------------------------------------
# State files (pure apart from the file system; unit-tested)
# ---------------------------------------------------------------------------------------


def state_path(base, domain):
    return os.path.join(dkim.key_path(base, domain, "x").rsplit(os.sep, 1)[0], "state.json")


def load_state(base, domain, ktype="rsa"):
    try:
        with open(state_path(base, domain), encoding="utf-8") as handle:
            state = json.load(handle)
    except FileNotFoundError:
        return dkim.new_state(domain, ktype)
    problems = dkim.validate_state(state)
    if problems:
        raise dkim.DkimError(f"{state_path(base, domain)}: {'; '.join(problems)}")
    return state


def save_state(base, domain, state):
    path = state_path(base, domain)
    mailfleet_files.write_atomic(path, json.dumps(state, indent=2, sort_keys=True) + "\n", mode=0o600)


def _signing_material(base, domain):
    """``{"selector", "key_type", "key"}`` of the domain's signing selector, or None. Private (no
    ``salt-run`` can print a private key; issue 15)."""
    try:
        state = load_state(base, domain)
    except (OSError, ValueError):
        return None
    selector = dkim.signing_selector(state)
    if not selector:
        return None
    with open(dkim.key_path(base, domain, selector), encoding="ascii") as handle:
        return {"selector": selector, "key_type": state["key_type"], "key": handle.read()}


# ---------------------------------------------------------------------------------------
# Effects
# ---------------------------------------------------------------------------------------


def _dns_facts(state):
    """What the configured resolver shows for each selector of the state."""
    import dns.message
    import dns.query

    server = str(__opts__.get("mailfleet_dns_resolver") or __opts__.get("mailfleet_dns_server")
                 or "198.18.0.2")
    port = int(__opts__.get("mailfleet_dns_resolver_port") or __opts__.get("mailfleet_dns_port")
               or 53)
    out = {}
    for entry in state["selectors"]:
        name = f"{entry['selector']}._domainkey.{state['domain']}."
        try:
            ans = dns.query.udp(dns.message.make_query(name, "TXT"), server, port=port, timeout=3)
        except Exception:  # noqa: BLE001
            continue  # unknown: not looked up
        values = ["".join(s.decode("ascii", "replace") for s in r.strings)
                  for rrset in ans.answer for r in rrset if hasattr(r, "strings")]
        values = [v for v in values if v.lower().startswith("v=dkim1")]
        out[entry["selector"]] = values[0] if values else None
    return {"dns": out}


def _publish(tgt, tgt_type, domain):
    # a runner's __salt__ holds the runners: mailfleet_dns.publish is called, not loaded by path
    ret = __salt__["mailfleet_dns.publish"](tgt=tgt, tgt_type=tgt_type, domains=domain)
    if not isinstance(ret, dict) or ret.get("errors"):
        raise dkim.DkimError(f"publishing failed: {ret.get('errors') if isinstance(ret, dict) else ret}")
    return ret


def _domains(tgt, tgt_type, only=None):
    """The domains served by the targeted minions (their pillar, compiled here)."""
    return sorted(_domain_data(tgt, tgt_type, only))


def _domain_data(tgt, tgt_type, only=None):
    """{domain: pillar data} of the domains served by the targeted minions."""
    domains, _ = __salt__["mailfleet_dns.fleet_data"](tgt, tgt_type, only)
    return domains


SETTING_KEYS = ("keep_old_days", "revoked_days", "rotate_days", "settle_seconds",
                "republish_seconds", "prefix")


def rotation_settings(master=None, domain=None, override=None):
    """
    The rotation settings of a domain: the module's defaults < master config
    ``mailfleet_dkim_rotation`` < the domain's pillar ``mailfleet:domains:<domain>:dkim``
    < the runner's arguments. Unknown keys and non-numeric periods are errors naming
    where they came from.
    """
    out = {}
    for where, layer in (("mailfleet_dkim_rotation (master config)", master),
                         ("mailfleet:domains:<domain>:dkim", domain),
                         ("arguments", override)):
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise dkim.DkimError(f"{where}: must be a mapping")
        for key, value in layer.items():
            if key not in SETTING_KEYS:
                raise dkim.DkimError(f"{where}: unknown setting {key!r} "
                                     f"(known: {', '.join(SETTING_KEYS)})")
            if value is None:
                continue
            if key != "prefix" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or value < 0):
                raise dkim.DkimError(f"{where}:{key}: {value!r} is not a number >= 0")
            out[key] = value
    return out


def _push(hosts):
    """``state.apply mail.rspamd`` on the hosts that serve the domain; raises unless every
    one of them answered and applied it without a failed state."""
    import salt.client

    if not hosts:
        return
    with salt.client.LocalClient(mopts=__opts__) as client:
        ret = client.cmd(list(hosts), "state.apply", ["mail.rspamd"], tgt_type="list",
                         kwarg={"queue": True}, timeout=300)
    problems = []
    for host in hosts:
        res = (ret or {}).get(host)
        if not isinstance(res, dict):
            problems.append(f"{host}: {res if res is not None else 'no answer'}")
            continue
        problems += [f"{host}: {st.get('__id__', sid)}: {st.get('comment')}"
                     for sid, st in res.items() if isinstance(st, dict) and st.get("result") is False]
    if problems:
        raise dkim.DkimError("installing the signing key failed: " + "; ".join(problems))


def _unpushed(state):
    """The signing entry when its key is not yet confirmed installed on the hosts."""
    for entry in state["selectors"]:
        if entry["status"] == "signing" and entry.get("pushed") is False:
            return entry
    return None


def drive(base, domain, now, publish, facts_of, settings=None, max_steps=MAX_STEPS, push=None):
    """
    Run a domain's rotation until nothing more is possible now. ``publish()`` publishes
    DNS for the whole fleet, ``facts_of(state)`` looks the selectors up. Returns the list
    of actions taken and the final state. Each state is saved after its effects succeeded.

    ``push()`` (optional) installs the signing key on the serving hosts (``state.apply
    mail.rspamd``) and raises when a host did not take it. With it, a switch of signing is
    pushed at once and the selector marked ``pushed`` only when that succeeded; until then
    (an interrupted run, a host down) nothing else happens and the next run pushes again,
    so the old selector is never revoked while a host may still sign with it.
    """
    state = load_state(base, domain)
    taken = []
    for _ in range(max_steps):
        pending = _unpushed(state) if push is not None else None
        if pending:
            push()
            new = json.loads(json.dumps(state))
            for e in new["selectors"]:
                if e["selector"] == pending["selector"]:
                    e["pushed"] = True
            save_state(base, domain, new)
            state = new
            taken.append({"action": "push", "selector": pending["selector"], "effects": [],
                          "why": "signing key installed on the serving hosts"})
            continue
        facts = facts_of(state)
        action = dkim.next_step(state, now(), facts, settings)
        if action["action"] in ("none", "wait"):
            taken.append(action)
            break
        if action["action"] == "error":
            raise dkim.DkimError(f"{domain}: {action['why']}")
        public = None
        if action["action"] == "generate":
            key = dkim.generate(state["key_type"])
            public = dkim.public_b64(key)
            dkim.write_private_key(dkim.key_path(base, domain, action["selector"]), key)
        new = dkim.advance(state, action, now(), facts, public)
        if "publish_dns" in action["effects"]:
            save_state(base, domain, new)   # publishing reads the saved state
            try:
                publish()
            except Exception:
                save_state(base, domain, state)
                raise
        if action["action"] == "switch_signing" and push is not None and \
                dkim.signing_selector(state):
            # A rotation: the hosts sign with the old selector until they get the new key.
            # (A domain's first key has nothing to protect; the next highstate installs it.)
            for e in new["selectors"]:
                if e["selector"] == action["selector"]:
                    e["pushed"] = False
        if "delete_key" in action["effects"] and action["selector"]:
            try:
                os.unlink(dkim.key_path(base, domain, action["selector"]))
            except FileNotFoundError:
                pass
        save_state(base, domain, new)
        state = new
        taken.append(action)
    return taken, state


# ---------------------------------------------------------------------------------------
# Salt entry points
# ---------------------------------------------------------------------------------------


def ensure(tgt="*mail*", tgt_type="glob", domains=None, rotate=False, wait=10, push=True,
           keep_old_days=None, revoked_days=None, settle_seconds=None):
    """
    Every domain served by the targeted minions gets a signing key whose record DNS shows.

    domains
        Only these served domains (comma-separated or a list).
    rotate
        ``True``: start a rotation (a new dated selector) for the domain(s).
    wait
        Seconds to wait for a just-published record to show in DNS before giving up for
        this run (the next run resumes).
    push
        ``True`` (default): when signing switches to a new selector, install it on the
        domain's hosts at once (``state.apply mail.rspamd``); the old selector is revoked
        only after that succeeded. ``False``: leave it to the next highstate (and nothing
        is revoked until a later run with push has confirmed it).
    keep_old_days, revoked_days, settle_seconds
        Override the rotation periods for this run (fractions allowed: the lab uses
        seconds). Otherwise from master config ``mailfleet_dkim_rotation`` and the domain's
        pillar ``mailfleet:domains:<domain>:dkim`` (defaults: 7 days kept, 7 days revoked).

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_dkim.ensure
        salt-run mailfleet_dkim.ensure domains=example-a.test rotate=True
    """
    base = _dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    data = _domain_data(tgt, tgt_type, domains)
    domains = sorted(data)
    override = {k: v for k, v in (("keep_old_days", keep_old_days), ("revoked_days", revoked_days),
                                  ("settle_seconds", settle_seconds)) if v is not None}
    out, failed = {}, False
    for name in domains:
        try:
            settings = rotation_settings(__opts__.get("mailfleet_dkim_rotation"),
                                         (data[name] or {}).get("dkim"), override)
        except dkim.DkimError as err:
            failed = True
            out[name] = {"error": str(err)}
            continue
        hosts = list((data[name] or {}).get("hosts") or [])
        if rotate:
            save_state(base, name, dkim.request_rotation(load_state(base, name)))

        def facts_of(state):
            facts = _dns_facts(state)
            deadline = time.monotonic() + float(wait)
            pending = [e for e in state["selectors"] if e["status"] == "published"]
            while pending and time.monotonic() < deadline and not all(
                    facts["dns"].get(e["selector"]) for e in pending):
                time.sleep(1)
                facts = _dns_facts(state)
            return facts

        try:
            taken, state = drive(base, name, time.time, lambda: _publish(tgt, tgt_type, name),
                                 facts_of, settings=settings,
                                 push=(lambda: _push(hosts)) if push else None)
            out[name] = {"signing": dkim.signing_selector(state),
                         "steps": [f"{a['action']} {a['selector'] or ''}: {a['why']}".strip()
                                   for a in taken]}
        except (dkim.DkimError, OSError) as err:
            failed = True
            out[name] = {"error": str(err)}
    __context__["retcode"] = 1 if failed else 0
    return dict(out, retcode=1 if failed else 0)


def status(tgt="*mail*", tgt_type="glob", domains=None):
    """
    The selectors of every served domain and their status.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_dkim.status domains=example-a.test
    """
    base = _dir()
    out = {}
    for name in _domains(tgt, tgt_type, domains):
        try:
            state = load_state(base, name)
        except (dkim.DkimError, OSError) as err:
            out[name] = {"error": str(err)}
            continue
        out[name] = {e["selector"]: e["status"] for e in state["selectors"]} or "no key"
    return out
