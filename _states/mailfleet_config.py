"""
State: the merged mail settings are valid (run first, with failhard, by the mail states).
"""

__virtualname__ = "mailfleet_config"


def __virtual__():
    return __virtualname__


def _mta_sts_part(domains):
    """{domain: {"hosts", "dns": {"mta_sts"}}} of the domains that have MTA-STS: the only
    part of a (possibly 100,000-mailbox) domains pillar this check needs."""
    out = {}
    for domain, data in (domains or {}).items() if isinstance(domains, dict) else ():
        dns = data.get("dns") if isinstance(data, dict) else None
        if isinstance(dns, dict) and dns.get("mta_sts"):
            out[domain] = {"hosts": data.get("hosts"), "dns": {"mta_sts": dns["mta_sts"]}}
    return out


def valid(name, config):
    """
    Fail, naming every bad pillar key, when the merged mail settings are unusable.

    .. code-block:: yaml

        mailfleet-settings-valid:
          mailfleet_config.valid:
            - config: {{ mf | json }}
            - failhard: True

    Besides ``config``, the host's pillar ``mailfleet:dkim`` and the MTA-STS settings under
    ``mailfleet:domains`` are checked, read here rather than passed in: the DKIM keys never
    become state arguments, and the comment never quotes a key.
    """
    # 3008 masks pillar.get inside execution modules and states: read __pillar__.
    mf = __pillar__.get("mailfleet") or {}
    mf = mf if isinstance(mf, dict) else {}
    errors = __salt__["mailfleet_config.check"](config, mf.get("dkim"), _mta_sts_part(mf.get("domains")))["problems"]
    if errors:
        return {"name": name, "result": False, "changes": {},
                "comment": "invalid mail settings, nothing changed:\n" + "\n".join(errors)}
    return {"name": name, "result": True, "changes": {}, "comment": "mail settings are valid"}
