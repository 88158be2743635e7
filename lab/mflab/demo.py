"""`make demo`: the lab up, then every host answering in its own way."""
import json
import subprocess
import ssl
import urllib.request

import dns.resolver

from . import config, fleet
from .fleet import SALT_DIR, VENV_BIN, run_in


def _resolver() -> dns.resolver.Resolver:
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [f"{config.NET_PREFIX}.2"]
    res.lifetime = 5
    return res


def host_answers(name: str, role: str, ip: str) -> str:
    """What a host says when asked the question its role is for."""
    if role == "master":
        out = subprocess.run([str(VENV_BIN / "salt-run"), "-c", str(SALT_DIR), "--out=json",
                              "manage.up"], capture_output=True, text=True, timeout=60)
        return f"salt-master, minions up: {', '.join(json.loads(out.stdout or '[]')) or 'none'}"
    if role == "dns":
        answer = _resolver().resolve(f"mail01.{config.DOMAIN}", "A")
        return f"BIND: mail01.{config.DOMAIN} A {answer[0]}"
    if role == "acme":
        ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "lab-ca.pem"))
        with urllib.request.urlopen(f"https://{ip}:14000/dir", context=ctx, timeout=10) as resp:
            directory = json.load(resp)
        return f"Pebble: ACME directory with newOrder at {directory['newOrder']}"
    if role == "mail":
        out = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                              f"{name}.{config.DOMAIN}", "grains.item", "osfinger", "saltversion"],
                             capture_output=True, text=True, timeout=60)
        grains = json.loads(out.stdout or "{}").get(f"{name}.{config.DOMAIN}", {})
        return f"salt-minion {grains.get('saltversion')} on {grains.get('osfinger')}"
    uname = run_in(name, ["uname", "-n"]).stdout.strip()
    ping = run_in(name, ["ping", "-c", "1", "-W", "2", f"mail01.{config.DOMAIN}"])
    return f"{uname}: mail01 {'reachable' if ping.returncode == 0 else 'UNREACHABLE'}"


def main() -> int:
    fleet.up()
    state = fleet.load_state()
    rows = [("master", "master", config.MASTER_IP)]
    rows += [(n, h["role"], h["ip"]) for n, h in state["hosts"].items()]
    print()
    failures = 0
    for name, role, ip in rows:
        try:
            said = host_answers(name, role, ip)
        except Exception as err:  # a demo reports every host, whatever one of them does
            said, failures = f"NO ANSWER: {err}", failures + 1
        print(f"  {name:<9} {ip:<13} {said}")
    return 1 if failures else 0
