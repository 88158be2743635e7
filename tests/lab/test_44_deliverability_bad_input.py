"""Bad input stops publishing, with an error naming the setting, and nothing is sent (issue 5).

- an SPF record over 10 lookups: tests/lab/test_40_deliverability.py
  (test_spf_over_ten_lookups_is_refused_and_nothing_is_published) and the unit tests;
- here: an external DMARC report address whose domain does not authorise the reports
  (RFC 7489 7.1), and a DKIM state on the master that cannot be read.

Each case onboards a throw-away domain under a lab zone through the master's extra
domain folder, proves that a change publish would make for a good domain is not sent
either, and removes the domain (and the DKIM folder) again."""
import json
import shutil

import pytest

from conftest import LAB_MAIL_DOMAINS, salt_run
from mflab import config, fleet
from test_40_deliverability import lookup, nsupdate, txt

RUA_DOMAIN = "badrua.example-a.test"
KEY_DOMAIN = "badkey.example-a.test"
DKIM_DIR = config.STATE / "dkim"          # mailfleet_dkim_dir of the lab master


def onboard(domain, dns=None):
    path = fleet.EXTRA_DOMAINS / f"{domain}.yaml"
    path.write_text(json.dumps({"mailfleet": {"domains": {domain: {
        "hosts": ["mail01.lab.test"], "description": "issue 5 bad input",
        **({"dns": dns} if dns else {})}}}}))
    return path


@pytest.fixture
def pending_good_change(lab, published):
    """A record publish would put back for example-a.test: it must stay missing."""
    nsupdate("example-a.test", ("delete", "_dmarc.example-a.test.", "TXT"))
    yield
    code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS}")
    assert code == 0, out[-3000:]
    assert any(v.startswith("v=DMARC1") for v in txt("_dmarc.example-a.test."))


def refused(domain):
    code, ret, out = salt_run("mailfleet_dns.publish", f"domains={LAB_MAIL_DOMAINS},{domain}")
    assert code != 0 and ret, out[-3000:]
    assert ret["published"] is False and "zones" not in ret
    assert lookup("_dmarc.example-a.test.", "TXT") == []       # the good change was not sent
    assert lookup(f"{domain}.", "MX") == [] and lookup(f"_dmarc.{domain}.", "TXT") == []
    return ret["errors"][domain]


def test_external_rua_without_its_authorisation_is_refused(lab, pending_good_change):
    # lab.test is no mail domain of ours: it must publish the authorisation itself.
    path = onboard(RUA_DOMAIN, {"dmarc": {"policy": "none", "rua": ["dmarc-reports@lab.test"]}})
    try:
        err = refused(RUA_DOMAIN)
    finally:
        path.unlink()
    assert err.startswith(f"mailfleet:domains:{RUA_DOMAIN}:dns:dmarc:rua: needs TXT \"v=DMARC1\" "
                          f"at {RUA_DOMAIN}._report._dmarc.lab.test.")
    assert "RFC 7489 7.1" in err and "DNS shows nothing" in err


def test_unreadable_dkim_state_is_refused_naming_the_setting(lab, pending_good_change):
    path = onboard(KEY_DOMAIN)
    # Unreadable for real, even to root: the state file's path is a folder.
    (DKIM_DIR / KEY_DOMAIN / "state.json").mkdir(parents=True)
    try:
        err = refused(KEY_DOMAIN)
    finally:
        path.unlink()
        shutil.rmtree(DKIM_DIR / KEY_DOMAIN)
    assert err.startswith(f"mailfleet_dkim_dir ({DKIM_DIR}): DKIM state of {KEY_DOMAIN} unreadable")
    assert str(DKIM_DIR / KEY_DOMAIN / "state.json") in err
