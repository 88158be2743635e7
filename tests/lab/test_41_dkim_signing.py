"""DKIM signing by Rspamd and verification on the receiving host, end to end, and a key
rotation driven from the master with short intervals.

alice@example-a.test (served by mail01) submits on 587; mail01 finds mail02 through the MX
mailfleet published; bob@example-b.test reads the message over IMAPS. The postmaster's
checks: mail02's Authentication-Results say dkim=pass, spf=pass, dmarc=pass for the
selector the master says signs, and an independent verifier (dkimpy, asking the lab DNS
itself) agrees with the DKIM-Signature."""
import base64
import email
import email.policy
import json
import time

import dkim
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from conftest import salt_run
from mailtools import PASSWORDS, swaks, tag
from mflab import config

DNS = f"{config.NET_PREFIX}.2"
SENDER, RCPT = "alice@example-a.test", "bob@example-b.test"
DOMAIN = "example-a.test"
# Short lab periods: the old selector is kept (published, not signing) this long, then
# revoked (empty p=) this long, then removed. Production defaults are 7 and 7 days.
KEEP_S, REVOKED_S = 40, 10

IMAP_RAW = r"""
import base64, imaplib, json, ssl, sys
host, user, password, needle = sys.argv[1:5]
imap = imaplib.IMAP4_SSL(host, 993, ssl_context=ssl.create_default_context())
imap.login(user, password)
imap.select("INBOX", readonly=True)
typ, data = imap.search(None, "SUBJECT", '"%s"' % needle)
out = []
for num in data[0].split():
    typ, msg = imap.fetch(num, "(BODY.PEEK[])")
    out.append(base64.b64encode(msg[0][1]).decode())
imap.logout()
print(json.dumps(out))
"""


def lab_txt(name, timeout=5):
    """dkimpy's dnsfunc: the TXT record asked straight of the lab DNS (not this machine's
    resolver), the strings of one record joined as RFC 6376 3.6.2.2 says."""
    if isinstance(name, bytes):
        name = name.decode()
    ans = dns.query.udp(dns.message.make_query(name, "TXT"), DNS, timeout=timeout)
    for rrset in ans.answer:
        if rrset.rdtype == dns.rdatatype.TXT:
            return b"".join(list(rrset)[0].strings)
    return None


def dkim_txt(selector: str) -> str | None:
    got = lab_txt(f"{selector}._domainkey.{DOMAIN}.")
    return got.decode() if got is not None else None


def dkim_rcode(selector: str) -> str:
    ans = dns.query.udp(dns.message.make_query(f"{selector}._domainkey.{DOMAIN}.", "TXT"), DNS,
                        timeout=5)
    return dns.rcode.to_text(ans.rcode())


def send_and_read(lab, label: str, local: bool = False) -> email.message.EmailMessage:
    """alice -> bob through submission on mail01 (or, local=True, sendmail(1) on mail01:
    local mail); the message as bob's IMAPS shows it."""
    subject = tag(label)
    if local:
        lab.run("mail01", "/usr/sbin/sendmail", "-f", SENDER, RCPT,
                input=f"From: {SENDER}\nTo: {RCPT}\nSubject: {subject}\n\nlocal {subject}\n")
    else:
        swaks(lab, "outside", "--server", "mail01.lab.test", "--port", "587", "--tls",
              "--auth", "PLAIN", "--auth-user", SENDER, "--auth-password", PASSWORDS[SENDER],
              "--from", SENDER, "--to", RCPT, "--header", f"Subject: {subject}",
              "--body", f"DKIM lab check {subject}\n")
    return read_bob(lab, subject)


def read_bob(lab, subject: str):
    deadline = time.monotonic() + 90
    while True:
        proc = lab.run("outside", "python3", "-c", IMAP_RAW, "mail02.lab.test", RCPT,
                       PASSWORDS[RCPT], subject)
        found = json.loads(proc.stdout)
        if found or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(found) == 1, f"{subject}: {len(found)} messages in bob's INBOX"
    raw = base64.b64decode(found[0])
    return email.message_from_bytes(raw, policy=email.policy.default), raw


def auth_results(msg) -> dict:
    """The results of mail02's Authentication-Results (authserv-id mail02.lab.test)."""
    ours = [str(h) for h in msg.get_all("Authentication-Results", [])
            if str(h).split(";", 1)[0].strip() == "mail02.lab.test"]
    assert len(ours) == 1, msg.get_all("Authentication-Results")
    out = {}
    for part in ours[0].split(";")[1:]:
        words = part.split()
        if words and "=" in words[0]:
            method, result = words[0].split("=", 1)
            out[method] = {"result": result, "text": " ".join(words)}
    return out


def signature_tags(msg) -> dict:
    sigs = msg.get_all("DKIM-Signature", [])
    assert len(sigs) == 1, sigs
    tags = {}
    for part in "".join(str(sigs[0]).split()).split(";"):
        if "=" in part:
            k, v = part.split("=", 1)
            tags[k] = v
    return tags


def signing_selector() -> str:
    code, ret, out = salt_run("mailfleet_dkim.status", f"domains={DOMAIN}")
    assert code == 0, out[-2000:]
    signing = [s for s, st in ret[DOMAIN].items() if st == "signing"]
    assert len(signing) == 1, ret
    return signing[0]


def assert_signed_and_verified(lab, label: str, selector: str, local: bool = False):
    """What a postmaster checks on one message: signed by mail01 with `selector`, mail02
    says dkim/spf/dmarc pass, and dkimpy verifies the signature against the lab DNS."""
    msg, raw = send_and_read(lab, label, local)
    sig = signature_tags(msg)
    assert (sig["d"], sig["s"], sig["a"]) == (DOMAIN, selector, "rsa-sha256"), sig
    res = auth_results(msg)
    assert res["dkim"]["result"] == "pass", res
    assert f"header.d={DOMAIN}" in res["dkim"]["text"] and f"header.s={selector}" in res["dkim"]["text"]
    assert res["spf"]["result"] == "pass" and "smtp.mailfrom=alice@example-a.test" in res["spf"]["text"]
    assert res["dmarc"]["result"] == "pass" and f"header.from={DOMAIN}" in res["dmarc"]["text"]
    assert dkim.verify(raw, dnsfunc=lab_txt), "dkimpy does not verify the DKIM-Signature"
    return msg


@pytest.fixture(scope="module")
def signing(lab, converged, published):
    return signing_selector()


def test_rspamd_checks_its_config_and_listens_on_loopback_only(lab, converged):
    for host in lab.mail_hosts:
        assert "syntax OK" in lab.run(host, "rspamadm", "configtest").stdout
        listen = lab.run(host, "ss", "-Hltn", "sport = :11332").stdout.split()
        assert "127.0.0.1:11332" in listen, listen
        main = lab.run(host, "postconf", "-h", "smtpd_milters", "non_smtpd_milters",
                       "milter_default_action").stdout.split("\n")
        assert main[:3] == ["inet:127.0.0.1:11332", "$smtpd_milters", "accept"], main


def test_key_files_only_on_the_serving_host(lab, converged, signing):
    path = f"/var/lib/rspamd/dkim/{DOMAIN}.{signing}.key"
    st = lab.run("mail01", "stat", "-c", "%U:%G %a", path).stdout.split()
    assert st == ["root:_rspamd", "640"], st
    assert lab.run("mail01", "stat", "-c", "%a", "/var/lib/rspamd/dkim").stdout.strip() == "750"
    # mail02 does not serve example-a.test: no key of it there
    assert lab.run("mail02", "sh", "-c", f"ls /var/lib/rspamd/dkim/ | grep -c '^{DOMAIN}' || true"
                   ).stdout.strip() == "0"


def test_alice_to_bob_is_signed_and_passes_dkim_spf_dmarc(lab, converged, published, signing):
    msg = assert_signed_and_verified(lab, "dkim", signing)
    # mail01 reached mail02 through the MX mailfleet published (the lab seeds none)
    assert "by mail02.lab.test" in " ".join(str(h) for h in msg.get_all("Received"))
    assert lab_txt(f"{signing}._domainkey.{DOMAIN}.").startswith(b"v=DKIM1; k=rsa; p=MII")


def test_a_forged_sender_fails_and_a_forged_authentication_results_is_dropped(lab, converged,
                                                                             published):
    """outside.lab.test claims to be alice and brings its own 'Authentication-Results:
    mail02.lab.test; dkim=pass ...'. mail02 drops that header (its own authserv-id, RFC 8601
    section 5) and reports what it saw: no signature, SPF fail, DMARC fail (policy none, so
    the message is still delivered)."""
    subject = tag("forged")
    swaks(lab, "outside", "--server", "mail02.lab.test", "--port", "25",
          "--ehlo", "outside.lab.test", "--from", SENDER, "--to", RCPT,
          "--header", f"Subject: {subject}",
          "--add-header", "Authentication-Results: mail02.lab.test; dkim=pass "
                          "header.d=example-a.test; spf=pass; dmarc=pass")
    msg, _ = read_bob(lab, subject)
    res = auth_results(msg)        # exactly one header with mail02's authserv-id
    assert res["dkim"]["result"] == "none", res
    assert res["spf"]["result"] == "fail" and "198.18.0.100" in res["spf"]["text"], res
    assert res["dmarc"]["result"] == "fail", res


def test_local_mail_from_sendmail_is_signed_too(lab, converged, published, signing):
    assert_signed_and_verified(lab, "dkim-local", signing, local=True)


def test_rotation_with_short_intervals_verifies_at_every_step(lab, converged, published, signing):
    """Rotation as the master drives it: new selector published and seen in DNS, signing
    switched and the key installed on mail01 (pushed by the runner), the old selector kept,
    then revoked (empty p=), then removed. A message after every step: signed with the
    expected selector and passing everywhere."""
    periods = (f"keep_old_days={KEEP_S / 86400}", f"revoked_days={REVOKED_S / 86400}")
    # A rotation left half-way by an earlier interrupted run is finished first (periods 0).
    for _ in range(3):
        code, status, out = salt_run("mailfleet_dkim.status", f"domains={DOMAIN}")
        if list(status[DOMAIN].values()) == ["signing"]:
            break
        salt_run("mailfleet_dkim.ensure", f"domains={DOMAIN}", "keep_old_days=0", "revoked_days=0",
                 timeout=600)
    assert list(status[DOMAIN].values()) == ["signing"], status
    old = signing_selector()

    def ensure(*extra):
        code, ret, out = salt_run("mailfleet_dkim.ensure", f"domains={DOMAIN}", *periods, *extra,
                                  timeout=600)
        assert code == 0 and "error" not in ret[DOMAIN], out[-3000:]
        return ret[DOMAIN]

    # 1. rotate: new key, published, verified in DNS, signing switched and pushed.
    step = ensure("rotate=True")
    switched = time.monotonic()   # the old selector's keep period started before this
    new = step["signing"]
    assert new != old, step
    acts = [s.split()[0] for s in step["steps"]]
    assert acts == ["generate", "publish", "verified", "switch_signing", "push", "none"], step

    # 2. before the keep period is over nothing happens to the old selector
    step = ensure()
    assert [s.split()[0] for s in step["steps"]] == ["none"], step
    assert time.monotonic() - switched < KEEP_S, "too slow for the keep period; raise KEEP_S"
    assert dkim_txt(old).startswith("v=DKIM1; k=rsa; p=MII")       # old kept, still valid
    assert dkim_txt(new).startswith("v=DKIM1; k=rsa; p=MII")
    assert_signed_and_verified(lab, "rot1", new)
    ls = lab.run("mail01", "ls", "/var/lib/rspamd/dkim").stdout.split()
    assert ls == [f"{DOMAIN}.{new}.key"], ls                      # the old key file is gone

    # 3. kept long enough: revoked (empty p=), mail still signed with the new one
    time.sleep(max(0.0, switched + KEEP_S + 1 - time.monotonic()))
    step = ensure()
    assert [s.split()[0] for s in step["steps"]][:1] == ["revoke"], step
    assert dkim_txt(old) == "v=DKIM1; k=rsa; p=", dkim_txt(old)
    assert_signed_and_verified(lab, "rot2", new)

    # 4. revoked long enough: removed from DNS and forgotten
    time.sleep(REVOKED_S + 1)
    step = ensure()
    assert [s.split()[0] for s in step["steps"]][:2] == ["remove", "forget"], step
    assert dkim_rcode(old) == "NXDOMAIN"
    code, status, out = salt_run("mailfleet_dkim.status", f"domains={DOMAIN}")
    assert status[DOMAIN] == {new: "signing"}, status
    assert_signed_and_verified(lab, "rot3", new)
    # the domain is left signed and its records as mailfleet publishes them
    # (record by record; FCrDNS is another test's concern)
    code, ret, out = salt_run("mailfleet_dns.verify", f"domains={DOMAIN}")
    diff = ret["domains"][DOMAIN]
    assert not (diff["missing"] or diff["wrong"] or diff["extra"]), out[-3000:]
    assert [e["name"] for e in diff["ok"] if "_domainkey" in e["name"]] == [
        f"{new}._domainkey.{DOMAIN}."]


def _wait_milter(lab, host, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "127.0.0.1:11332" in lab.run(host, "ss", "-Hltn", "sport = :11332").stdout:
            return
        time.sleep(1)
    raise AssertionError(f"{host}: rspamd's milter is not listening after {timeout}s")


def test_mail_flows_while_rspamd_is_down(lab, converged, published, signing):
    """milter_default_action = accept: with rspamd stopped on mail01 (the signer) alice's
    mail is accepted and delivered, unsigned, instead of refused or bounced; after the
    restart it is signed again."""
    lab.run("mail01", "systemctl", "stop", "rspamd")
    try:
        msg, _ = send_and_read(lab, "rspamd-down")
        assert msg.get_all("DKIM-Signature") is None
        assert auth_results(msg)["spf"]["result"] == "pass"
    finally:
        lab.run("mail01", "systemctl", "start", "rspamd")
        _wait_milter(lab, "mail01")
    assert_signed_and_verified(lab, "rspamd-back", signing_selector())
