"""Certificate expiry and "renewed but not reloaded" answered by the fleet (issue 6), for real:
mail01's mailfleet_watch engine probes its certbot lineage on disk and what 25/587/993 serve,
the master's cert reactor hands the event to the mailfleet_certs runner, which renews (Pebble,
certbot on mail01) and/or reloads, re-probes, records in the ledger and alerts (a webhook
receiver on the lab bridge, a thread of this test).

- Stale: the certificate is renewed on disk with certbot's directory hooks off (what a broken
  deploy hook leaves behind): 587 and 993 still serve the old serial; the engine reports it,
  the runner reloads, and `outside` sees the new serial on 587 and 993 (openssl s_client).
- Expiring: the threshold is set above the validity of Pebble's certificates (5 years)
  through command-line pillar on mail.defense (nothing is written to the pillar tree): every
  certificate is then "near expiry", so the runner renews with --force-renewal; `outside` sees
  a new serial on 587 and 993, the ledger holds one renewal with its reason, reporter and both
  serials, and the engine's repeated reports (every 10 s here) cause no second renewal within
  the cooldown (a cert_cooldown alert instead).

mail.defense is re-applied without the override at the end (the engine back to its pillar
settings; the minion restarts), and the cooldown entries this test made are cleared."""
import json
import time

import pytest

from conftest import salt_run, state_failures
from mailtools import detector, wait
from mflab import fleet
from test_55_dnsbl import _master_log_has, webhook

H1 = "mail01.lab.test"
M1 = "mail01"  # the lab's name for the host (labctl exec)
TAG = "mailfleet/cert/problem"
FAST = {"cert_interval": 5, "cert_repeat": 10}
REACT = 240  # seconds: first probe round + certbot against Pebble + reload + re-probe



def served_serial(lab, port):
    """The serial `outside` is served on mail01:<port> (STARTTLS for 25/587)."""
    starttls = "-starttls smtp" if port in (25, 587) else ""
    proc = lab.run("outside", "sh", "-c",
                   f"echo | timeout 20 openssl s_client -connect {H1}:{port} {starttls} -servername {H1} 2>/dev/null"
                   " | openssl x509 -noout -serial", check=False, timeout=60)
    out = proc.stdout.strip()
    return out.split("=", 1)[1] if out.startswith("serial=") else None


def disk_serial(lab):
    return lab.run(M1, "openssl", "x509", "-noout", "-serial", "-in",
                   f"/etc/letsencrypt/live/{H1}/cert.pem").stdout.strip().split("=", 1)[1]


def apply_defense(lab, extra=None):
    args = [H1, "state.apply", "mail.defense"]
    if extra:
        args.append("pillar=" + json.dumps({"mailfleet": {"defense": extra}}))
    ret = lab.salt(*args, timeout=600)
    assert not state_failures(ret), state_failures(ret)
    return ret


def engine_certs(lab):
    """The detector's certificate settings as mail.defense last wrote them on mail01."""
    return detector(lab, M1)[0].get("certs") or {}


class Override:
    """The engine settings this test needs, kept in place: in a shared lab another run's
    state.apply may write the pillar's settings back meanwhile; they
    are applied again then, at most 3 times. A lone run (make test) never needs it."""

    def __init__(self, lab, extra):
        self.lab, self.extra, self.left = lab, extra, 3
        self.want = {k[5:]: v for k, v in extra.items()}
        apply_defense(lab, extra)

    def held(self):
        got = engine_certs(self.lab)
        if all(got.get(k) == v for k, v in self.want.items()):
            return True
        assert self.left > 0, f"the engine settings were reset by another run 3 times: {got}"
        self.left -= 1
        apply_defense(self.lab, self.extra)
        return False


def renewals(since):
    code, rows, out = salt_run("mailfleet_certs.history", "hours=1", timeout=120)
    assert code == 0, out[-2000:]
    return [r for r in rows if r["host"] == H1 and r["id"] > since]


def last_id():
    code, rows, out = salt_run("mailfleet_certs.history", "hours=10000", timeout=120)
    assert code == 0, out[-2000:]
    return max([r["id"] for r in rows] or [0])



@pytest.fixture(scope="module")
def reactor_live(lab, published):
    """The running master maps mailfleet/cert/problem to reactor/cert.sls (a forged-looking
    event with no lineage is refused by the runner, which logs it)."""
    log = fleet.SALT_DIR / "master.log"
    since = log.stat().st_size
    lab.salt(H1, "mailfleet_signed.fire", json.dumps({"host": H1, "lineages": []}), TAG, timeout=60)
    try:
        wait(lambda: _master_log_has(f"mailfleet_certs: refused certificate event from '{H1}'", since), 20,
             "the cert reactor")
        yield None
        return
    except AssertionError:
        pytest.fail("the reactor stayed silent for 20 s: broken, or the lab master was started before the cert reactor was configured "
                    "(config/master.d/mailfleet.conf is read at master start): restart the lab")


START = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@pytest.fixture(scope="module")
def restore(lab, reactor_live):
    salt_run("mailfleet_certs.clear", H1, timeout=120)
    try:
        yield
    finally:
        apply_defense(lab)
        salt_run("mailfleet_certs.clear", H1, timeout=120)


def alerts(got, kind):
    """Alerts of ``kind`` about mail01's lineage the master sent (mailfleet_alert.recent, the
    alert ledger): the Salt event sent and, when the webhook is configured, the webhook
    answered 2xx. (``got`` is our receiver's list; another test running at the same time in a
    shared lab may rewrite or remove the one alert settings file, so the ledger's channel
    results are what is checked.)"""
    code, rows, out = salt_run("mailfleet_alert.recent", "hours=1", timeout=120)
    assert code == 0, out[-2000:]
    return [r for r in rows if r["kind"] == kind and r["subject"] == f"{H1} {H1}" and r["sent"]
            and r["created"] >= START and (r["channels"] or {}).get("event") == "sent"
            and str((r["channels"] or {}).get("webhook", "HTTP 2")).startswith("HTTP 2")]


def test_renewed_on_disk_but_not_reloaded_is_reloaded(lab, restore, webhook):
    ov = Override(lab, FAST)
    before = served_serial(lab, 587)
    assert before and before == served_serial(lab, 993) == disk_serial(lab)
    start = last_id()
    # Renew with certbot's directory hooks off: mailfleet's deploy hook does not reload.
    lab.run(M1, "certbot", "renew", "--non-interactive", "--no-random-sleep-on-renew", "--cert-name", H1,
            "--force-renewal", "--no-directory-hooks", timeout=300)
    new = disk_serial(lab)
    assert new != before
    wait(lambda: ov.held() and served_serial(lab, 587) == new and served_serial(lab, 993) == new, REACT,
         f"the new serial {new} served on 587 and 993")
    assert served_serial(lab, 25) == new
    rows = wait(lambda: [r for r in renewals(start) if r["ok"] is not None], 60, "the ledger row")
    assert [(r["action"], r["ok"], r["reporter"], r["old_serial"], r["new_serial"]) for r in rows] == [
        ("reload", 1, H1, before, new)], rows                 # the engine saw `before` served, `new` on disk
    # (stale on 25, 587 and 993 when nothing else reloads postfix or dovecot meanwhile)
    assert rows[0]["reason"].startswith("stale:"), rows[0]["reason"]
    wait(lambda: alerts(webhook, "cert_reloaded"), 60, "the cert_reloaded alert at the webhook")


def test_certificate_near_expiry_is_renewed_reloaded_and_served_once(lab, restore, webhook):
    before = served_serial(lab, 587)
    assert before and before == served_serial(lab, 993) == disk_serial(lab)
    start = last_id()
    ov = Override(lab, dict(FAST, cert_threshold_days=3000))     # above Pebble's 5-year validity
    new = wait(lambda: ov.held() and (s := served_serial(lab, 587)) not in (None, before) and s, REACT,
               "a new serial served on 587")
    assert wait(lambda: served_serial(lab, 993) == new, 60, "the new serial on 993") is True
    assert disk_serial(lab) == new
    rows = wait(lambda: [r for r in renewals(start) if r["ok"] is not None], 60, "the ledger row")
    assert [(r["action"], r["ok"], r["reporter"], r["old_serial"], r["new_serial"]) for r in rows] == [
        ("renew", 1, H1, before, new)], rows
    assert rows[0]["reason"].startswith("expiring")
    wait(lambda: alerts(webhook, "cert_renewed"), 60, "the cert_renewed alert at the webhook")
    # The new certificate is still below the (lab) threshold, so mail01 keeps reporting it (the
    # engine every 10 s here; sent once more from mail01 itself below, so the check does not
    # depend on another run leaving the engine's settings alone): the cooldown allows no
    # second renewal, a cert_cooldown alert says so.
    again = {"host": H1, "threshold_days": 3000, "lineages": [
        {"name": H1, "problems": ["expiring"], "report": "repeat", "disk": {"serial": new}}]}
    lab.salt(H1, "mailfleet_signed.fire", json.dumps(again), TAG, timeout=60)
    wait(lambda: alerts(webhook, "cert_cooldown"), 90, "a cert_cooldown alert")
    assert [r["action"] for r in renewals(start)] == ["renew"]
    assert served_serial(lab, 587) == new


def test_a_failed_renewal_alerts_and_is_not_retried_within_the_cooldown(lab, restore, webhook):
    """A real fault: mail01's certbot lineage points at a port where no ACME server listens,
    so `certbot renew` fails. The runner records the failure, raises cert_failed (critical) and
    does not try again while the host keeps reporting."""
    conf = f"/etc/letsencrypt/renewal/{H1}.conf"
    before = disk_serial(lab)
    start = last_id()
    lab.run(M1, "cp", "-p", conf, "/root/mailfleet-test56-renewal.conf")
    try:
        lab.run(M1, "sed", "-i", "s#^server = .*#server = https://acme.lab.test:14999/dir#", conf)
        # The cooldown of the previous test's renewal is lifted only now, with the lineage
        # broken: the engine keeps reporting "expiring", and a report handled between the
        # lift and the edit would renew for real (and start a new cooldown).
        salt_run("mailfleet_certs.clear", H1, timeout=120)
        ov = Override(lab, dict(FAST, cert_threshold_days=3000))
        rows = wait(lambda: ov.held() and [r for r in renewals(start) if r["ok"] is not None], REACT,
                    "the failed renewal in the ledger")
        assert [(r["action"], r["ok"], r["old_serial"]) for r in rows] == [("renew", 0, before)], rows
        assert "certbot renew failed" in rows[0]["result"]
        wait(lambda: alerts(webhook, "cert_failed"), 60, "the cert_failed alert")
        again = {"host": H1, "threshold_days": 3000, "lineages": [
            {"name": H1, "problems": ["expiring"], "report": "repeat", "disk": {"serial": before}}]}
        lab.salt(H1, "mailfleet_signed.fire", json.dumps(again), TAG, timeout=60)
        time.sleep(15)
        assert len(renewals(start)) == 1                      # no second attempt: no loop
        assert disk_serial(lab) == before == served_serial(lab, 587)
    finally:
        lab.run(M1, "cp", "-p", "/root/mailfleet-test56-renewal.conf", conf)
        lab.run(M1, "rm", "-f", "/root/mailfleet-test56-renewal.conf")


def test_a_forged_event_naming_another_host_is_refused(lab, reactor_live):
    """mail01 claims mail02's certificate is expiring, signed with mail01's own key: the runner
    refuses it (no key of mail02's signed it) and nothing is renewed on mail02."""
    log = fleet.SALT_DIR / "master.log"
    since = log.stat().st_size
    start = last_id()
    before = lab.run("mail02", "openssl", "x509", "-noout", "-serial", "-in",
                     "/etc/letsencrypt/live/mail02.lab.test/cert.pem").stdout.strip()
    forged = {"host": "mail02.lab.test", "threshold_days": 21, "lineages": [
        {"name": "mail02.lab.test", "problems": ["expiring"], "report": "new", "disk": {"serial": "AA"}}]}
    lab.salt(H1, "mailfleet_signed.fire", json.dumps(forged), TAG, timeout=60)  # with mail01's own key
    wait(lambda: _master_log_has("mailfleet_certs: refused certificate event from 'mail01.lab.test': no valid key ",
                                 since), 60, "the refusal")
    time.sleep(5)
    code, rows, out = salt_run("mailfleet_certs.history", "hours=1", timeout=120)
    assert [r for r in rows if r["id"] > start] == []
    assert lab.run("mail02", "openssl", "x509", "-noout", "-serial", "-in",
                   "/etc/letsencrypt/live/mail02.lab.test/cert.pem").stdout.strip() == before
