"""
The DNS records of a mail domain, on a mail host: what the formula asks of it.

A thin execution module over ``_utils/mailfleet_records.py`` (the pure record builder the
master's publishing runner uses too, so the MTA-STS policy a host serves and the id the
master publishes come from one function). The full record set of a domain is the runner's
job on the master: ``salt-run mailfleet_dns.publish test=True``.
"""
import mailfleet_records  # salt://_utils: on sys.path for execution modules

__virtualname__ = "mailfleet_dnsrecords"


# The operator surface: what Salt's loader exposes (and `sys.doc` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("mta_sts_policy",)


def __virtual__():
    return __virtualname__


def mta_sts_policy(domain, data, mx_names=None):
    """
    The MTA-STS policy ``domain`` serves at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``
    and its TXT record: ``{"policy": text or None, "record": "v=STSv1; id=...",
    "problems": [...]}`` (each problem names its pillar key). ``data`` is the domain's pillar
    (``hosts`` and ``dns:mta_sts``); ``mx_names`` default to the minion ids under ``hosts``.

    CLI Example::

        salt mail01.lab.test mailfleet_dnsrecords.mta_sts_policy example-a.test \\
            '{"hosts": ["mail01.lab.test"], "dns": {"mta_sts": {"mode": "enforce"}}}'
    """
    return mailfleet_records.mta_sts_policy(domain, data, mx_names)
