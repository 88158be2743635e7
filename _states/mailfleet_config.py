"""
State: the merged mail settings are valid (run first, with failhard, by the mail states).
"""

__virtualname__ = "mailfleet_config"


def __virtual__():
    return __virtualname__


def valid(name, config):
    """
    Fail, naming every bad pillar key, when the merged mail settings are unusable.

    .. code-block:: yaml

        mailfleet-settings-valid:
          mailfleet_config.valid:
            - config: {{ mf | json }}
            - failhard: True
    """
    errors = __salt__["mailfleet_config.check"](config)["problems"]
    if errors:
        return {"name": name, "result": False, "changes": {},
                "comment": "invalid mail settings, nothing changed:\n" + "\n".join(errors)}
    return {"name": name, "result": True, "changes": {}, "comment": "mail settings are valid"}
