"""
A host's outbound mode as its pillar says it (``mailfleet_outbound``), from the ledger's
``outbound`` rows: shared by the ``mailfleet_reroute`` runner (which decides and writes the
rows) and the ``mailfleet_bans`` ext_pillar (which hands them to each host). Pure functions.
"""
import ipaddress
import json

__virtualname__ = "mailfleet_outbound_mode"

# master option mailfleet_reroute: the two settings the pillar needs (the runner has more)
DEFAULTS = {"hold_lifetime": "100d", "grace": 172800}


def __virtual__():
    return __virtualname__


def relayhost(ip):
    """Postfix relayhost for a peer's address (no MX lookup)."""
    addr = ipaddress.ip_address(ip)
    return f"[{addr}]:25" if addr.version == 4 else f"[ipv6:{addr}]:25"


def admit_entry(ip):
    """The mynetworks entry that admits a relaying host's address on its peer."""
    addr = ipaddress.ip_address(ip)
    return f"{addr}/32" if addr.version == 4 else f"[{addr}]/128"


def outbound_pillar(minion_id, rows, now, conf):
    """Pillar ``mailfleet_outbound`` of one minion from the ledger's ``outbound`` rows (dicts)."""
    own = next((r for r in rows if r["host"] == minion_id), None)
    out = {"mode": "normal", "admit": []}
    if own:
        out["mode"] = own["mode"]
        out["since"] = own["since"]
        out["reason"] = own["reason"]
        if own["mode"] == "relay" and own["relayhost"]:
            out["relayhost"] = own["relayhost"]
            out["peer"] = own["peer"]
        ended = own.get("hold_ended")
        if own["mode"] == "hold" or (ended and now - ended < float(conf["grace"])):
            # held mail must never reach maximal_queue_lifetime (nor soon after the hold ends)
            out["queue_lifetime"] = conf["hold_lifetime"]
    admit = set()
    for r in rows:
        if r.get("admit_peer") == minion_id and r["host"] != minion_id:
            for ip in json.loads(r.get("ips") or "[]"):
                admit.add(admit_entry(ip))
    out["admit"] = sorted(admit)
    return out
