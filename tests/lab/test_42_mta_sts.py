"""MTA-STS end to end: the policy of a lab domain served over HTTPS at
https://mta-sts.<domain>/.well-known/mta-sts.txt by its mail host's nginx (certificate from
the lab ACME server for that name, ordered once mailfleet published its A record), fetched
from `outside` like a sending MTA would, and matching what DNS publishes."""
import base64
import hashlib

import pytest

from conftest import salt_run, state_changes, state_failures
from test_40_deliverability import lookup, txt

DOMAIN = "example-a.test"          # pillar/domains/example-a.test.yaml: dns:mta_sts testing
HOST = "mail01.lab.test"
URL = f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt"
LAB_CA = "/etc/mailfleet-lab/shared/lab-ca.pem"   # the lab CA (Pebble's roots), on every host


@pytest.fixture(scope="module")
def sts_served(lab, published):
    """mail.mtasts applied after publishing (the A record of mta-sts.<domain> exists now)."""
    ret = lab.salt(HOST, "state.apply", "mail.mtasts", timeout=600)
    assert not state_failures(ret), "\n".join(state_failures(ret))
    return ret


def fetch(lab):
    """curl from outside: status, headers and body (bytes kept: the CRLF line ends count)."""
    proc = lab.run("outside", "sh", "-c",
                   f"curl -sS --max-time 20 --cacert {LAB_CA} -D /tmp/sts.h -o /tmp/sts.b "
                   f"-w '%{{http_code}}' {URL} && cat /tmp/sts.h && echo '@@BODY@@' && "
                   "base64 -w0 /tmp/sts.b", timeout=60)
    code, rest = proc.stdout[:3], proc.stdout[3:]
    headers, body = rest.split("@@BODY@@\n")
    return int(code), headers, base64.b64decode(body.strip())


def test_policy_is_served_over_https_and_matches_the_published_mx_and_id(lab, sts_served):
    code, headers, body = fetch(lab)
    assert code == 200, (code, headers)
    assert "content-type: text/plain" in headers.lower()          # RFC 8461 3.3
    text = body.decode("ascii")
    lines = text.split("\r\n")                                      # CRLF, RFC 8461 3.2
    assert lines[0] == "version: STSv1" and lines[-1] == ""
    fields = [tuple(line.split(": ", 1)) for line in lines[:-1]]
    assert ("mode", "testing") in fields and ("max_age", "86400") in fields
    # The mx lines are the hosts the published MX names.
    mx_hosts = sorted(r.split()[1].rstrip(".") for r in lookup(f"{DOMAIN}.", "MX"))
    assert mx_hosts == ["mail01.lab.test"]
    assert sorted(v for k, v in fields if k == "mx") == mx_hosts
    # The published id is derived from exactly this policy text: it changes when it does.
    (record,) = txt(f"_mta-sts.{DOMAIN}.")
    assert record == f"v=STSv1; id={hashlib.sha256(body).hexdigest()[:32]}"
    assert lookup(f"mta-sts.{DOMAIN}.", "A") == ["198.18.0.11"]
    (tlsrpt,) = txt(f"_smtp._tls.{DOMAIN}.")
    assert tlsrpt == f"v=TLSRPTv1; rua=mailto:postmaster@{DOMAIN}"


def test_the_certificate_is_for_the_mta_sts_name(lab, sts_served):
    proc = lab.run("outside", "sh", "-c",
                   f"openssl s_client -connect mta-sts.{DOMAIN}:443 -servername mta-sts.{DOMAIN} "
                   f"-CAfile {LAB_CA} -verify_return_error </dev/null 2>/dev/null | "
                   "openssl x509 -noout -ext subjectAltName", timeout=60)
    assert f"DNS:mta-sts.{DOMAIN}" in proc.stdout


def test_verify_reports_the_mta_sts_records_green(lab, sts_served):
    # Only this domain's MTA-STS/TLS-RPT rows: other tests sharing a developer's lab may be
    # breaking other records on purpose at the same moment.
    code, ret, out = salt_run("mailfleet_dns.verify", f"domains={DOMAIN}")
    assert ret and DOMAIN in ret["domains"], out[-3000:]
    mine = {(f"_mta-sts.{DOMAIN}.", "TXT"), (f"mta-sts.{DOMAIN}.", "A"),
            (f"_smtp._tls.{DOMAIN}.", "TXT")}
    rows = ret["domains"][DOMAIN]
    assert mine <= {(e["name"], e["type"]) for e in rows["ok"]}, out[-3000:]
    for kind in ("missing", "wrong", "extra"):
        assert not mine & {(e["name"], e["type"]) for e in rows[kind]}, out[-3000:]
    # and the policy each address of mta-sts.<domain> serves is the published one.
    (served,) = ret["mta_sts"][DOMAIN].values()
    assert served["ok"] and "mode: testing" in served["detail"], out[-3000:]


def test_a_policy_changed_by_hand_is_reported_and_the_state_puts_it_back(lab, sts_served):
    path = f"/var/www/mta-sts/{DOMAIN}/.well-known/mta-sts.txt"
    lab.run("mail01", "sed", "-i", "s/^mode: testing/mode: enforce/", path)
    try:
        code, ret, out = salt_run("mailfleet_dns.verify", f"domains={DOMAIN}")
        assert code != 0 and ret and not ret["ok"], out[-3000:]
        (served,) = ret["mta_sts"][DOMAIN].values()
        assert not served["ok"] and "differs" in served["detail"], served
    finally:
        fixed = lab.salt(HOST, "state.apply", "mail.mtasts", timeout=600)
    assert not state_failures(fixed)
    assert [c for c in state_changes(fixed) if "mailfleet-mta-sts-policy" in c]
    code, ret, out = salt_run("mailfleet_dns.verify", f"domains={DOMAIN}")
    (served,) = ret["mta_sts"][DOMAIN].values()
    assert served["ok"], out[-3000:]


def test_reapplying_changes_nothing_and_test_mode_too(lab, sts_served):
    again = lab.salt(HOST, "state.apply", "mail.mtasts", timeout=600)
    assert not state_failures(again) and not state_changes(again), state_changes(again)
    dry = lab.salt(HOST, "state.apply", "mail.mtasts", "test=True", timeout=600)
    assert not state_failures(dry)
    assert not [c for c in state_changes(dry)], state_changes(dry)
