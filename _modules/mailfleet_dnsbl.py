"""
DNSBL verdicts of this mail host's sending addresses, on demand (``salt <host>
mailfleet_dnsbl.check``): the same lookups the mailfleet_watch detector runs every
``mailfleet:dnsbl:interval``, through the host's configured resolver. The logic is
``_utils/mailfleet_dnsbl_lookup.py`` (imported plainly: Salt puts the utils directories on
``sys.path``); this module only reads the host's pillar and grains.
"""
import mailfleet_dnsbl_lookup as _lookup

__virtualname__ = "mailfleet_dnsbl"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("check",)


def __virtual__():
    return __virtualname__


def _conf():
    return (__pillar__.get("mailfleet") or {}).get("dnsbl") or {}


def _host_ips(conf):
    """The addresses this host sends from: pillar ``ips``, else its ipv4/ipv6 grains."""
    if conf["ips"]:
        return _lookup.sending_ips(conf["ips"])
    return _lookup.sending_ips(list(__grains__.get("ipv4") or []) + list(__grains__.get("ipv6") or []))


def check():
    """
    Current verdict (``listed`` / ``clear`` / ``unknown``) of every sending address on every
    zone of pillar ``mailfleet:dnsbl``, each zone self-tested first. The DQS key never appears
    in the output.

    CLI Example::

        salt '*mail*' mailfleet_dnsbl.check
    """
    conf = _lookup.settings(_conf())
    res = _lookup.check_round(_host_ips(conf), conf["zones"],
                              _lookup.make_lookup(conf["resolvers"], conf["timeout"]), conf["dqs_key"])
    return {"zones": res["zones"],
            "verdicts": {f"{ip} {zone}": v for (ip, zone), v in res["verdicts"].items()}}
