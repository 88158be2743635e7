"""Bring the lab fleet up, down, report it, and run commands inside its hosts."""
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import config, image, net, pki, zones
from .config import Host
from .progress import Step, say

STATE_FILE = config.STATE / "state.json"
SALT_DIR = config.STATE / "salt"
SHARED = config.STATE / "shared"
EXTRA_DOMAINS = config.STATE / "domains"
LAB_PILLAR = config.STATE / "pillar"
GUEST = config.LAB_SRC / "guest"
BOOT_TIMEOUT = 120
VENV_BIN = Path(sys.executable).parent

ROLE_UNITS = {  # units started by the role (systemd.wants on the guest's command line)
    "dns": ["named.service"],
    "acme": ["pebble.service"],
    "mail": ["rsyslog.service", "salt-minion.service"],
    "client": [],
}
ROLE_BOUND_UNITS = {"acme": ["pebble.service"], "mail": ["salt-minion.service"]}


# ---------------------------------------------------------------- preflight

def preflight(need_debootstrap: bool, suites: tuple[str, ...] = (config.DEFAULT_RELEASE,)) -> None:
    """One line naming what is missing, exit 2, nothing touched."""
    if os.geteuid() != 0:
        raise SystemExit("lab: must run as root (systemd-nspawn, bridges and nftables need it)")
    tools = ["systemd-nspawn", "ip", "nft", "nsenter"] + (["debootstrap"] if need_debootstrap else [])
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"lab: missing {', '.join(missing)} (apt-get install systemd-container "
                         f"debootstrap nftables iproute2 util-linux)")
    for suite in suites if need_debootstrap else ():
        url = f"{config.DEBIAN_MIRROR}/dists/{suite}/Release"
        try:
            urllib.request.urlopen(url, timeout=15).close()
        except OSError as err:
            raise SystemExit(f"lab: Debian mirror unreachable ({url}: {err})")


# ---------------------------------------------------------------- state

def load_state() -> dict | None:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return None


def save_state(state: dict) -> None:
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE_FILE)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie or a reused pid is not our process
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _init_pid(nspawn_pid: int) -> int | None:
    """The guest's PID 1 as seen from here: a child of nspawn whose innermost pid is 1."""
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        nspid = fields.get("NSpid", "").split()
        if fields.get("PPid", "").strip() == str(nspawn_pid) and len(nspid) > 1 and nspid[-1] == "1":
            return int(nspid[0])
    return None


def _machine_pids() -> dict[str, int]:
    """nspawn processes of this lab found by their exact machine names (state lost)."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith(b"systemd-nspawn"):
            continue
        for arg in argv:
            if arg.startswith(b"--machine=" + config.MACHINE_PREFIX.encode()):
                found[arg.split(b"=", 1)[1].decode()] = int(cmdline.parent.name)
    return found


# ---------------------------------------------------------------- exec

def guest_argv(init_pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", "-t", str(init_pid), "-m", "-u", "-i", "-n", "-p", "-r", "-w",
            "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root", "LANG=C.UTF-8", *argv]


def host_pid(name: str) -> int:
    state = load_state()
    if not state or name not in state["hosts"]:
        raise SystemExit(f"lab: no running host {name!r} (is the lab up? `make lab-status`)")
    return state["hosts"][name]["init_pid"]


def run_in(name: str, argv: list[str], *, input: str | None = None, timeout: float = 120,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run argv inside lab host `name` (all its namespaces), capture text output."""
    return subprocess.run(guest_argv(host_pid(name), argv), input=input, capture_output=True,
                          text=True, timeout=timeout, check=check)


# ---------------------------------------------------------------- up

def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _prepare(fleet: list[Host]) -> None:
    """Per-host folders (bound read-only at /etc/mailfleet-lab), keys, zones, master config."""
    if config.STATE.exists():
        shutil.rmtree(config.STATE)
    (SHARED / "ca").mkdir(parents=True)
    EXTRA_DOMAINS.mkdir()
    secret = pki.tsig_secret()
    _write(config.STATE / "tsig.key", zones.tsig_keyfile(secret), 0o600)
    master_pki = SALT_DIR / "pki" / "master"
    pki.salt_keypair(master_pki, "master")
    (master_pki / "minions").mkdir()
    for sub in ("minions_pre", "minions_rejected", "minions_denied"):
        (master_pki / sub).mkdir()
    for host in fleet:
        _prepare_host(host, fleet, secret)
        if host.role == "mail":  # the lab's own hosts: keys pre-seeded as accepted
            shutil.copy(config.STATE / "hosts" / host.name / "salt" / "pki" / "minion.pub",
                        master_pki / "minions" / host.fqdn)
    _write(SALT_DIR / "master", master_config())


def _prepare_host(host: Host, fleet: list[Host], secret: str) -> None:
    hdir = config.STATE / "hosts" / host.name
    (hdir / "shared").mkdir(parents=True)
    shutil.copy(GUEST / "init.sh", hdir / "init.sh")
    _write(hdir / "host.env", "\n".join([
        f"ROLE={host.role}", f"NAME={host.name}", f"FQDN={host.fqdn}", f"IP={host.ip}",
        "PREFIXLEN=24", f"NAMESERVER={config.NET_PREFIX}.2", f"DOMAIN={config.DOMAIN}"]) + "\n")
    if host.role == "dns":
        all_zones = zones.zones(fleet)
        _write(hdir / "bind" / "named.conf", zones.named_conf(sorted(all_zones), secret), 0o640)
        for zname, text in all_zones.items():
            _write(hdir / "bind" / f"{zname}.zone", text)
    elif host.role == "acme":
        pki.listener_ca_and_leaf(hdir / "pebble", host.fqdn, host.ip)
        shutil.copy(hdir / "pebble" / "listener-ca.pem", SHARED / "ca" / "listener-ca.pem")
        _write(hdir / "pebble" / "pebble-config.json", json.dumps({"pebble": {
            "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/etc/mailfleet-lab/pebble/cert.pem",
            "privateKey": "/etc/mailfleet-lab/pebble/key.pem",
            "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}}, indent=2))
    elif host.role == "mail":
        sdir = hdir / "salt"
        pki.salt_keypair(sdir / "pki", "minion")
        shutil.copy(SALT_DIR / "pki" / "master" / "master.pub", sdir / "pki" / "minion_master.pub")
        _write(sdir / "minion", f"master: {config.MASTER_IP}\nid: {host.fqdn}\n"
                                f"pki_dir: /etc/salt/pki/minion\nlog_level_logfile: info\n")
        (sdir / "minion.d").mkdir()
        for conf in (config.REPO / "config" / "minion.d").glob("*.conf"):
            shutil.copy(conf, sdir / "minion.d" / conf.name)
        _host_pillar(host)


def _host_pillar(host: Host) -> None:
    """A mail host without a committed pillar file (pillar/lab/hosts/) gets one the lab makes
    in its own pillar root, with fresh passwords: lab secrets never written into the repo."""
    if (config.REPO / "pillar" / "lab" / "hosts" / f"{host.name}.sls").exists():
        return
    words = {k: secrets.token_urlsafe(12) for k in ("postfix", "dovecot", "sync")}
    _write(LAB_PILLAR / "lab" / "hosts" / f"{host.name}.sls", "\n".join([
        f"# {host.fqdn} only, written by the lab (lab/mflab/fleet.py) for a host added to it.",
        "mailfleet:", "  db:",
        f"    postfix_password: {words['postfix']}",
        f"    dovecot_password: {words['dovecot']}",
        f"    sync_password: {words['sync']}",
        "  postmaster: postmaster@lab.test", ""]), 0o600)


def master_config() -> str:
    s, r = SALT_DIR, config.REPO
    return "\n".join([
        "# Written by the lab (lab/mflab/fleet.py); the project's settings are in config/master.d.",
        f"interface: {config.MASTER_IP}", "user: root",
        f"pki_dir: {s}/pki/master", f"cachedir: {s}/cache", f"sock_dir: {s}/sock",
        f"pidfile: {s}/salt-master.pid", f"log_file: {s}/master.log", f"key_logfile: {s}/key.log",
        "log_level_logfile: info", "auto_accept: False",
        "file_roots:", "  base:", f"    - {r}/salt",
        "pillar_roots:", "  base:", f"    - {r}/pillar",
        f"    - {LAB_PILLAR}  # host files the lab writes for hosts it adds",
        "# Runners and the ext_pillar load straight from salt/_runners, salt/_pillar (links).",
        "module_dirs:", f"  - {r}/salt",
        "# mailfleet_domains last: Salt deep-copies the pillar so far before each further merge.",
        "ext_pillar:", "  - mailfleet_bans: {}  # the ban ledger's bans in force, for reconciliation",
        "  - mailfleet_domains:", "      path:", f"        - {r}/pillar/domains",
        f"        - {EXTRA_DOMAINS}  # tests and benchmarks onboard domains here",
        "# Ban path (issue 6); config/master.d/mailfleet.conf maps the same and is included last.",
        "reactor:", "  - 'mailfleet/abuse/report':", "    - salt://reactor/abuse.sls",
        "  - 'salt/minion/*/start':", "    - salt://reactor/minion_start.sls",
        f"mailfleet_tsig_keyfile: {config.STATE}/tsig.key",
        "# mailfleet_dns runner: the lab BIND takes the updates and answers the checks.",
        f"mailfleet_dns_server: {config.NET_PREFIX}.2",
        f"mailfleet_dns_resolver: {config.NET_PREFIX}.2",
        f"mailfleet_dkim_dir: {config.STATE}/dkim",
        f"mailfleet_lab_ca: {SHARED}/lab-ca.pem",
        f"include: {r}/config/master.d/*.conf", ""])


def _boot(host: Host, img: Path) -> int:
    """Start `host` from its release's image `img`; returns nspawn's PID."""
    hdir = config.STATE / "hosts" / host.name
    argv = ["systemd-nspawn", "-q", "-D", str(img), "--boot", "--register=no", "--keep-unit",
            "--volatile=overlay", f"--network-bridge={config.BRIDGE}", f"--machine={host.machine}",
            f"--hostname={host.fqdn}", "--resolv-conf=off", "--timezone=off", "--link-journal=no",
            "--console=read-only",
            f"--bind-ro={hdir}:/etc/mailfleet-lab", f"--bind-ro={SHARED}:/etc/mailfleet-lab/shared"]
    for unit in ["mailfleet-lab-init.service"] + ROLE_BOUND_UNITS.get(host.role, []):
        argv.append(f"--bind-ro={GUEST}/units/{unit}:/etc/systemd/system/{unit}")
    argv.append("systemd.wants=mailfleet-lab-init.service")
    argv += [f"systemd.wants={u}" for u in ROLE_UNITS[host.role]]
    if host.role != "mail":
        argv += [f"systemd.mask={u}" for u in config.mail_only_units(host.release)]
    if host.role != "dns":
        argv.append("systemd.mask=named.service")
    log = open(config.STATE / f"console-{host.name}.log", "wb")
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc.pid


def _wait_booted(host: Host, nspawn_pid: int) -> int:
    deadline = time.monotonic() + BOOT_TIMEOUT
    init = None
    while time.monotonic() < deadline:
        if not alive(nspawn_pid):
            log = (config.STATE / f"console-{host.name}.log").read_text(errors="replace")
            raise RuntimeError(f"{host.name}: systemd-nspawn exited during boot:\n{log[-2000:]}")
        init = init or _init_pid(nspawn_pid)
        if init:
            out = subprocess.run(guest_argv(init, ["systemctl", "is-system-running"]),
                                 capture_output=True, text=True).stdout.strip()
            if out in ("running", "degraded"):
                failed = [u for u in ["mailfleet-lab-init.service"] + ROLE_UNITS[host.role]
                          if subprocess.run(guest_argv(init, ["systemctl", "is-active", "-q", u])).returncode]
                if failed:
                    status = subprocess.run(guest_argv(init, ["systemctl", "status", "--no-pager", *failed]),
                                            capture_output=True, text=True).stdout
                    raise RuntimeError(f"{host.name}: {', '.join(failed)} not active:\n{status[-2000:]}")
                return init
        time.sleep(0.5)
    raise RuntimeError(f"{host.name}: not booted within {BOOT_TIMEOUT}s")


def _boot_all(batch: list[Host], state: dict) -> None:
    with Step(f"booting {', '.join(f'{h.name} ({h.release})' for h in batch)}"):
        pids = {h.name: _boot(h, Path(state["images"][h.release])) for h in batch}
        for h in batch:
            state["hosts"][h.name] = {"nspawn_pid": pids[h.name], "init_pid": None, "ip": h.ip,
                                      "role": h.role, "fqdn": h.fqdn, "release": h.release}
        save_state(state)
        with ThreadPoolExecutor(len(batch)) as pool:
            inits = dict(zip(pids, pool.map(lambda h: _wait_booted(h, pids[h.name]), batch)))
        for name, init in inits.items():
            state["hosts"][name]["init_pid"] = init
        save_state(state)


def _fetch_lab_ca(acme: Host) -> None:
    """Pebble regenerates its issuing root at every start: fetch it once Pebble answers."""
    listener_ca = SHARED / "ca" / "listener-ca.pem"
    ctx = ssl.create_default_context(cafile=str(listener_ca))
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"https://{acme.ip}:15000/roots/0", context=ctx, timeout=5) as r:
                root = r.read().decode()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    _write(SHARED / "ca" / "pebble-root.pem", root)
    _write(SHARED / "lab-ca.pem", listener_ca.read_text() + root)


def _start_master() -> int:
    log = open(SALT_DIR / "master-stdout.log", "wb")
    proc = subprocess.Popen([str(VENV_BIN / "salt-master"), "-c", str(SALT_DIR)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return proc.pid


def wait_minions(minions: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    pending = set(minions)
    while pending:
        out = subprocess.run([str(VENV_BIN / "salt"), "-c", str(SALT_DIR), "--out=json", "--static",
                              "-t", "10", "-L", ",".join(sorted(pending)), "test.ping"],
                             capture_output=True, text=True)
        try:
            answered = {k for k, v in json.loads(out.stdout or "{}").items() if v is True}
        except ValueError:
            answered = set()
        pending -= answered
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"minions did not answer test.ping: {sorted(pending)}\n{out.stderr[-1500:]}"
                               + "".join(_minion_journal(m) for m in sorted(pending)))


def _minion_journal(fqdn: str) -> str:
    """What a silent minion's host says about it (for the error: a CI log is all there is)."""
    name = fqdn.split(".", 1)[0]
    try:
        pid = host_pid(name)
        text = subprocess.run(guest_argv(pid, ["sh", "-c", "systemctl status --no-pager salt-minion | head -5; "
                                                "journalctl -u salt-minion --no-pager -n 25; ip -br addr"]),
                              capture_output=True, text=True, timeout=30).stdout
    except (SystemExit, OSError, subprocess.SubprocessError) as err:
        text = f"(no journal: {err})"
    return f"\n--- {name}: salt-minion ---\n{text[-3000:]}"


def restart_master(timeout: float = 120) -> int:
    """Stop the lab's salt-master (its whole process group) and start it again with the same
    configuration; returns once every lab minion answers again. For fault tests: what the
    master keeps on disk (the ledger) must survive this."""
    state = load_state()
    if not state or not alive(state.get("master_pid")):
        raise RuntimeError("the lab's salt-master is not running")
    _terminate_group(state["master_pid"], 10)
    state["master_pid"] = _start_master()
    save_state(state)
    wait_minions(sorted(h["fqdn"] for h in state["hosts"].values() if h["role"] == "mail"), timeout)
    return state["master_pid"]


def is_up() -> bool:
    """The lab asked for (host count and releases from the environment) is running; hosts
    added to it since (`labctl add`) may run beside them."""
    state = load_state()
    if not state or not alive(state.get("master_pid")):
        return False
    running = state["hosts"]
    if not all(alive(h["nspawn_pid"]) and alive(h["init_pid"]) for h in running.values()):
        return False
    return all(h.name in running and running[h.name].get("release", config.DEFAULT_RELEASE) == h.release
               for h in config.hosts())


def up() -> None:
    if is_up():
        say("the lab is already up; nothing changed")
        status()
        return
    fleet = config.hosts()
    suites = tuple(sorted({h.release for h in fleet}))
    preflight(need_debootstrap=not all(image.is_built(s) for s in suites), suites=suites)
    if load_state() or _machine_pids() or net.leftovers():
        say("found a half-up lab; bringing it down first")
        down()
    t0 = time.monotonic()
    images = {suite: str(image.build(suite)) for suite in suites}
    try:
        with Step("preparing keys, zones and configuration"):
            _prepare(fleet)
            net.up()
            state = {"repo": str(config.REPO), "images": images, "mail_hosts": config.mail_count(),
                     "releases": {h.name: h.release for h in fleet if h.role == "mail"},
                     "hosts": {}, "master_pid": None}
            state["master_pid"] = _start_master()
            save_state(state)
        infra = [h for h in fleet if h.role in ("dns", "acme")]
        _boot_all(infra, state)
        with Step("fetching the lab CA from Pebble"):
            _fetch_lab_ca(next(h for h in fleet if h.role == "acme"))
        _boot_all([h for h in fleet if h not in infra], state)
        minions = [h.fqdn for h in fleet if h.role == "mail"]
        with Step(f"waiting for {len(minions)} minions to answer the master"):
            wait_minions(minions)
    except BaseException as err:  # noqa: BLE001 (Ctrl-C too: never leave a half-up lab)
        say(f"lab up failed: {err}")
        say("bringing the half-up lab down")
        down()
        raise SystemExit(1)
    say(f"lab up in {time.monotonic() - t0:.1f}s")
    status()


# ---------------------------------------------------------------- add / remove

def _dns_host_records(host: Host, present: bool) -> None:
    """The host's A and PTR records in the lab BIND, by a TSIG-signed RFC 2136 update."""
    import dns.name
    import dns.query
    import dns.tsig
    import dns.update
    secret = zones.tsig_secret_of((config.STATE / "tsig.key").read_text())
    key = dns.tsig.Key(dns.name.from_text(zones.TSIG_NAME), secret, dns.tsig.HMAC_SHA256)
    for zone, owner, rtype, data in ((config.DOMAIN, host.name, "A", host.ip),
                                     (zones.REVERSE_ZONE, str(host.octet), "PTR", host.fqdn + ".")):
        update = dns.update.UpdateMessage(zone, keyring=key)
        if present:
            update.replace(owner, 60, rtype, data)
        else:
            update.delete(owner, rtype)
        answer = dns.query.tcp(update, f"{config.NET_PREFIX}.2", timeout=10)
        if answer.rcode() != 0:
            raise RuntimeError(f"DNS update of {owner}.{zone} {rtype} refused: rcode {answer.rcode()}")


def _accept_key(host: Host, timeout: float = 60) -> None:
    """Accept the new host's minion key deliberately: only the key the lab generated for it
    (compared byte for byte), never whatever key shows up under its name."""
    pending = SALT_DIR / "pki" / "master" / "minions_pre" / host.fqdn
    expected = (config.STATE / "hosts" / host.name / "salt" / "pki" / "minion.pub").read_text()
    deadline = time.monotonic() + timeout
    while not pending.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{host.fqdn}: no key waiting for acceptance after {timeout:.0f}s")
        time.sleep(0.3)
    if pending.read_text().strip() != expected.strip():
        raise RuntimeError(f"{host.fqdn}: the waiting key is not the one the lab generated; not accepted")
    subprocess.run([str(VENV_BIN / "salt-key"), "-c", str(SALT_DIR), "-y", f"--accept={host.fqdn}"],
                   check=True, capture_output=True, text=True)


def add(name: str, release: str) -> Host:
    """Boot one more mail host into the running lab: its own key accepted deliberately, its
    name in the lab DNS, a pillar file of its own. It serves no domain until a domain file
    lists it."""
    state = load_state()
    if not state or not alive(state.get("master_pid")):
        raise SystemExit("lab: the lab is not up (`make lab` first)")
    config.check_release(release)
    try:
        number = int(name.removeprefix("mail")) if name.startswith("mail") else 0
    except ValueError:
        number = 0
    if not 1 <= number <= 80 or name != f"mail{number:02d}":
        raise SystemExit(f"lab: a mail host is named mail01..mail80, not {name!r}")
    if name in state["hosts"]:
        raise SystemExit(f"lab: {name} is already in the lab")
    host = config.mail_host(number, {name: release})
    t0 = time.monotonic()
    if release not in state["images"]:
        preflight(need_debootstrap=not image.is_built(release), suites=(release,))
        state["images"][release] = str(image.build(release))
    state.setdefault("releases", {})[name] = release
    save_state(state)
    try:  # whatever fails, `remove` takes back what was done
        with Step(f"preparing {name}"):
            _prepare_host(host, [], "")
            _dns_host_records(host, present=True)
        _boot_all([host], state)
        with Step(f"accepting {host.fqdn}'s key and waiting for it to answer"):
            _accept_key(host)
            wait_minions([host.fqdn])
    except BaseException:
        remove(name)
        raise
    say(f"{name} ({release}) added in {time.monotonic() - t0:.1f}s")
    return host


def remove(name: str) -> None:
    """Take an added host out of the lab again: stopped, key deleted, DNS records and its
    lab-made pillar file removed. The lab's own hosts stay (`make lab-down` ends them)."""
    state = load_state()
    if not state or name not in state.get("releases", {}) and name not in state["hosts"]:
        raise SystemExit(f"lab: no host {name!r} in the running lab")
    if name in {h.name for h in config.hosts(state.get("mail_hosts"), state.get("releases", {}))}:
        raise SystemExit(f"lab: {name} is one of the lab's own hosts; `make lab-down` stops it")
    entry = state["hosts"].get(name, {})
    host = config.mail_host(int(name.removeprefix("mail")), state.get("releases", {}))
    pids = [p for p in (entry.get("init_pid"),) if p]
    _terminate(pids, 0)
    if entry.get("nspawn_pid"):
        _terminate([entry["nspawn_pid"]], 5)
    subprocess.run([str(VENV_BIN / "salt-key"), "-c", str(SALT_DIR), "-y", f"--delete={host.fqdn}"],
                   capture_output=True, text=True)
    try:
        _dns_host_records(host, present=False)
    except (OSError, RuntimeError) as err:
        say(f"{name}: DNS records not withdrawn: {err}")
    shutil.rmtree(config.STATE / "hosts" / name, ignore_errors=True)
    (LAB_PILLAR / "lab" / "hosts" / f"{name}.sls").unlink(missing_ok=True)
    state["hosts"].pop(name, None)
    state.get("releases", {}).pop(name, None)
    save_state(state)
    say(f"{name} removed from the lab")


# ---------------------------------------------------------------- down

def _terminate(pids: list[int], grace: float) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate_group(pgid: int, grace: float) -> None:
    """The master and every process it forked (its own session): even when its main
    process already died, its workers must not keep the lab's ports bound."""
    if not _group_alive(pgid):
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.2)
    if _group_alive(pgid):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(pgid):
        time.sleep(0.1)


def down() -> None:
    t0 = time.monotonic()
    state = load_state() or {"hosts": {}}
    nspawns = {h["nspawn_pid"] for h in state["hosts"].values() if h.get("nspawn_pid")}
    nspawns |= set(_machine_pids().values())
    # Volatile hosts keep nothing: powering them off gracefully would only cost time.
    inits = [h["init_pid"] for h in state["hosts"].values() if h.get("init_pid")]
    inits += [p for p in (_init_pid(n) for n in nspawns) if p]
    _terminate(inits, 0)
    _terminate(sorted(nspawns), 5)
    if state.get("master_pid"):
        _terminate_group(state["master_pid"], 10)
    net.down()
    if config.STATE.exists():
        shutil.rmtree(config.STATE)
    say(f"lab down in {time.monotonic() - t0:.1f}s")


# ---------------------------------------------------------------- status

def status(as_json: bool = False) -> int:
    state = load_state()
    if not state:
        left = net.leftovers() + [f"nspawn {m}" for m in _machine_pids()]
        if as_json:
            print(json.dumps({"up": False, "leftovers": left}))
        else:
            say("the lab is down" + (f"; leftovers: {', '.join(left)}" if left else ""))
        return 1
    rows = [("master", "master", config.MASTER_IP, alive(state.get("master_pid")), state.get("master_pid"), "-")]
    rows += [(n, h["role"], h["ip"], alive(h["nspawn_pid"]) and alive(h["init_pid"]), h["init_pid"],
              h.get("release", config.DEFAULT_RELEASE)) for n, h in state["hosts"].items()]
    if as_json:
        print(json.dumps({"up": all(r[3] for r in rows),
                          "hosts": {r[0]: {"role": r[1], "ip": r[2], "running": r[3], "pid": r[4], "release": r[5]}
                                    for r in rows}}))
    else:
        print(f"{'host':<10} {'role':<8} {'address':<14} {'release':<9} {'state':<8} pid")
        for name, role, ip, ok, pid, release in rows:
            print(f"{name:<10} {role:<8} {ip:<14} {release:<9} {'running' if ok else 'DOWN':<8} {pid}")
    return 0 if all(r[3] for r in rows) else 1
