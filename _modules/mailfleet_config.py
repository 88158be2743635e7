"""
Is this mail host's pillar usable? The checks are ``_utils/mailfleet_settings_check.py``;
``mail.validate`` runs them first through the ``mailfleet_config.valid`` state, and a
postmaster can ask before a run.
"""
import yaml as _yaml

import mailfleet_settings_check as _check

__virtualname__ = "mailfleet_config"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("check", "mapdata")


def __virtual__():
    return __virtualname__


def check(cfg, dkim=None, mta_sts=None):
    """
    Check the merged mail settings ``cfg`` (``mail/map.jinja``'s ``mf``), the DKIM pillar
    ``dkim`` and the MTA-STS part of the served domains ``mta_sts`` ({domain: {"hosts",
    "dns": {"mta_sts"}}}). Returns ``{"valid": bool, "problems": [...]}``, each problem
    naming its pillar key.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailfleet_config.check '{"host": {"ssh_port": 22}}'
    """
    errors = (_check.problems(cfg) + _check.webmail_problems(cfg) + _check.dkim_problems(dkim)
              + _check.mta_sts_problems(mta_sts))
    return {"valid": not errors, "problems": errors}


def mapdata(cfg):
    """
    ``cfg`` (``mail/map.jinja``'s merged ``mf``) as YAML text, keys sorted, every secret
    (a key ending in ``password``, ``secret`` or ``_key``, or named ``key``) replaced by
    ``<secret>`` when set: what ``mail._mapdata`` dumps for review.

    CLI Example:

    .. code-block:: bash

        salt mail01.lab.test mailfleet_config.mapdata '{"lookup": {"postfix_dir": "/etc/postfix"}}'
        salt mail01.lab.test state.apply mail._mapdata   # the host's own merged map
    """
    return "# mail/map.jinja merged settings (mail._mapdata); secrets masked\n" + \
        _yaml.safe_dump(_masked(cfg), default_flow_style=False, sort_keys=True)


def _masked(value, key=""):
    if isinstance(value, dict):
        return {k: _masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, key) for v in value]
    secret = key.endswith(("password", "secret", "_key")) or key == "key"
    return "<secret>" if secret and value else value
