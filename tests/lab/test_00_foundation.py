"""The lab itself: the fleet boots, answers, resolves, issues certificates, stays local."""
import json
import subprocess
import sys

from mflab import config, fleet

LABCTL = [sys.executable, str(config.REPO / "lab" / "labctl.py")]


def dig(lab, host, *args):
    return lab.run(host, "dig", "+time=3", "+tries=1", *args, check=False).stdout


def test_lab_up_twice_changes_nothing(lab):
    before = fleet.load_state()
    proc = subprocess.run(LABCTL + ["up"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "already up; nothing changed" in proc.stdout
    assert fleet.load_state() == before
    status = json.loads(subprocess.run(LABCTL + ["status", "--json"], capture_output=True,
                                       text=True).stdout)
    assert status["up"] is True
    assert set(status["hosts"]) == {"master", "dns", "acme", "outside", "attacker", *lab.mail_hosts}


def test_every_minion_answers_test_ping_through_the_master(lab):
    answers = lab.salt("*", "test.ping")
    assert answers == {f"{h}.{config.DOMAIN}": True for h in lab.mail_hosts}
    assert set(lab.salt("*mail*", "test.ping")) == set(answers)


def test_lab_dns_answers_a_soa_and_ptr(lab):
    assert dig(lab, "mail01", "+short", "A", "mail02.lab.test").split() == [lab.ip("mail02")]
    # The mail domains' zones are served (SOA from the lab DNS); their MX and the rest are
    # mailfleet's to publish (tests/lab/conftest.py, test_40), the lab seeds none.
    for domain in config.MAIL_DOMAINS:
        soa = dig(lab, "mail01", "+short", "SOA", domain).split()
        assert soa[:2] == ["dns.lab.test.", "hostmaster.lab.test."], (domain, soa)
    for host in ["dns", "acme", "outside", "attacker", *lab.mail_hosts]:
        assert dig(lab, "mail01", "+short", "-x", lab.ip(host)).split() == [f"{host}.lab.test."]


def test_lab_dns_refuses_recursion_for_outside_names(lab):
    out = dig(lab, "mail01", "A", "debian.org")
    assert "status: REFUSED" in out, out


def test_dnsbl_test_entry_listed_and_loopback_not(lab):
    # RFC 5782 section 5: a DNSBL lists 127.0.0.2 and never 127.0.0.1.
    assert dig(lab, "mail01", "+short", "A", "2.0.0.127.dnsbl.lab.test").split() == ["127.0.0.2"]
    out = dig(lab, "mail01", "A", "1.0.0.127.dnsbl.lab.test")
    assert "status: NXDOMAIN" in out, out


def test_certbot_order_over_http01_chains_to_the_lab_ca(lab):
    workdir = "/root/certbot-lab-test"
    # Port 80 is free on a bare host; once the mail state runs nginx we use its webroot.
    port80 = lab.run("mail01", "sh", "-c", "ss -ltnH 'sport = :80'", check=False).stdout.strip()
    how = ["--webroot", "-w", "/var/www/acme"] if port80 else ["--standalone"]
    lab.run("mail01", "certbot", "certonly", "--non-interactive", "--agree-tos",
            "-m", "postmaster@lab.test", "--server", "https://acme.lab.test:14000/dir",
            "--config-dir", f"{workdir}/etc", "--work-dir", f"{workdir}/work",
            "--logs-dir", f"{workdir}/log", "--no-random-sleep-on-renew",
            "-d", "mail01.lab.test", *how, timeout=180)
    live = f"{workdir}/etc/live/mail01.lab.test"
    verify = lab.run("mail01", "openssl", "verify", "-CAfile", "/etc/ssl/certs/ca-certificates.crt",
                     "-untrusted", f"{live}/chain.pem", f"{live}/cert.pem")
    assert verify.stdout.strip().endswith(": OK")
    subject = lab.run("mail01", "openssl", "x509", "-in", f"{live}/cert.pem", "-noout", "-ext",
                      "subjectAltName").stdout
    assert "DNS:mail01.lab.test" in subject
    # Pebble's own log says it validated over HTTP on mail01's port 80 (not "always valid").
    pebble_log = lab.run("acme", "journalctl", "-u", "pebble", "--no-pager", "-o", "cat").stdout
    assert "Attempting to validate w/ HTTP: http://mail01.lab.test:80/.well-known/acme-challenge/" in pebble_log
    lab.run("mail01", "rm", "-rf", workdir)


def test_outside_and_attacker_reach_the_mail_hosts(lab):
    for client in ("outside", "attacker"):
        for host in lab.mail_hosts:
            lab.run(client, "ping", "-c", "1", "-W", "2", f"{host}.lab.test")


def test_nothing_in_the_lab_range_routes_off_the_machine(lab):
    public = "8.8.8.8"  # `ip route get` only asks the routing table; nothing is sent
    for host in ("mail01", "outside", "attacker"):
        proc = lab.run(host, "ip", "route", "get", public, check=False)
        assert proc.returncode != 0 and "unreachable" in proc.stderr.lower(), proc
    # On this machine, a packet from a lab address arriving on the bridge has nowhere to go.
    proc = subprocess.run(["ip", "route", "get", public, "from", lab.ip("mail01"), "iif", config.BRIDGE],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "no route to host" in proc.stderr.lower(), proc
    # And forwarding between the bridge and any other interface is refused.
    assert open("/proc/sys/net/ipv4/ip_forward").read().strip() == "0"
    rules = subprocess.run(["nft", "list", "table", "inet", config.NFT_TABLE],
                           capture_output=True, text=True, check=True).stdout
    assert f'iifname "{config.BRIDGE}" oifname != "{config.BRIDGE}"' in rules and "drop" in rules
