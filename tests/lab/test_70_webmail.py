"""Roundcube and PostfixAdmin (mail.webmail), driven by a real headless Chromium, on each
release: mail01 (Debian 12: Roundcube 1.6.5, PostfixAdmin 3.3.13, PHP 8.2) and mail02
(Debian 13: Roundcube 1.6.20, PostfixAdmin 3.3.15, PHP 8.4); every test runs once per host.

The browser runs on the lab machine (198.18.0.1, on PostfixAdmin's allow-list in the lab
pillar). It does not use the lab DNS: --host-resolver-rules maps the host's name to its
address. Trust: Python first verifies the certificate the host serves against the lab's Pebble
root (and its name); Chromium is then told to accept exactly that certificate's key
(--ignore-certificate-errors-spki-list), because teaching Debian's Chromium a private root
needs an NSS database tool the host does not have. Screenshots go to tests/artifacts/
(ignored by git).
"""
import base64
import hashlib
import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from conftest import state_failures
from mailtools import PASSWORDS, swaks, tag, wait_for_mail
from mflab import fleet

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ALL_PASSWORDS = json.loads((Path(__file__).parent / "passwords.json").read_text())
ADMIN = "admin@lab.test"
# Each webmail host, its mailbox and domain (the domain file that lists it under hosts), and
# the other host's, which its PostfixAdmin must not show.
SITES = {
    "mail01": {"name": "mail01.lab.test", "user": "alice@example-a.test", "domain": "example-a.test",
               "peer": "mail02", "peer_user": "bob@example-b.test", "other_domain": "example-b.test"},
    "mail02": {"name": "mail02.lab.test", "user": "bob@example-b.test", "domain": "example-b.test",
               "peer": "mail01", "peer_user": "alice@example-a.test", "other_domain": "example-a.test"},
}
PHP = {"bookworm": "8.2", "trixie": "8.4"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def verified_leaf(ip: str, name: str) -> bytes:
    """The certificate the host serves on 443, verified against the lab's Pebble root."""
    ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "ca" / "pebble-root.pem"))
    with socket.create_connection((ip, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            return tls.getpeercert(binary_form=True)


def spki_pin(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module", params=sorted(SITES))
def site(request, lab, converged):
    """A host converged with the webmail switch on (lab pillar): its name, address, release."""
    host = request.param
    release = fleet.load_state()["hosts"][host].get("release", "bookworm")
    return dict(SITES[host], host=host, ip=lab.ip(host), php=PHP[release])


@pytest.fixture
def browser(site, tmp_path):
    pin = spki_pin(verified_leaf(site["ip"], site["name"]))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                f"--host-resolver-rules=MAP {site['name']} {site['ip']}",
                f"--ignore-certificate-errors-spki-list={pin}", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30):
    return WebDriverWait(driver, timeout).until(condition)


def shot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def roundcube_login(driver, name: str, address: str):
    driver.get(f"https://{name}/roundcube/")
    driver.find_element(By.ID, "rcmloginuser").send_keys(address)
    driver.find_element(By.ID, "rcmloginpwd").send_keys(PASSWORDS[address])
    driver.find_element(By.ID, "rcmloginsubmit").click()


def pfa_login(driver, name: str):
    driver.get(f"https://{name}/postfixadmin/login.php")
    driver.find_element(By.ID, "fUsername").send_keys(ADMIN)
    driver.find_element(By.ID, "fPassword").send_keys(ALL_PASSWORDS[ADMIN])
    driver.find_element(By.NAME, "submit").click()
    wait(driver, lambda d: "login.php" not in d.current_url)


def test_roundcube_user_reads_the_peers_mail_and_the_reply_reaches_the_peer(lab, site, browser):
    subject = tag("rc")
    user, peer_user, name = site["user"], site["peer_user"], site["name"]
    me, them = user.split("@")[0].title(), peer_user.split("@")[0].title()
    # Delivered by SMTP: the peer submits on its own host's 587, which relays to this host's 25.
    swaks(lab, "outside", "--server", f"{site['peer']}.lab.test", "--port", "587", "--tls", "--auth", "PLAIN",
          "--auth-user", peer_user, "--auth-password", PASSWORDS[peer_user],
          "--from", peer_user, "--to", user,
          "--header", f"Subject: {subject}", "--body", f"Hello {me}, {subject} here.")
    assert wait_for_mail(lab, user, subject), f"{user} never got {peer_user}'s message"

    roundcube_login(browser, name, user)
    row = wait(browser, EC.presence_of_element_located(
        (By.XPATH, f"//table[@id='messagelist']//tr[contains(., '{subject}')]")))
    assert "mailfleet lab webmail :: Inbox" in browser.title  # product_name from pillar
    inbox = shot(browser, f"roundcube-inbox-{site['host']}.png")
    assert inbox.stat().st_size > 10_000

    ActionChains(browser).double_click(row).perform()
    wait(browser, lambda d: "_action=show" in d.current_url)
    assert wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "h2.subject"))).text == subject
    assert f"Hello {me}, {subject} here." in browser.find_element(By.TAG_NAME, "body").text
    shot(browser, f"roundcube-message-{site['host']}.png")

    browser.find_element(By.XPATH, "//a[contains(concat(' ', @class, ' '), ' reply ') "
                                   "and normalize-space(.)='Reply']").click()
    wait(browser, lambda d: "_action=compose" in d.current_url)
    subject_field = wait(browser, EC.presence_of_element_located((By.ID, "compose-subject")))
    assert subject_field.get_attribute("value") == f"Re: {subject}"
    body = browser.find_element(By.ID, "composebody")
    body.send_keys(f"Thanks {them}, reply to {subject}.\n")
    browser.find_element(By.CSS_SELECTOR, "button.btn-primary.send").click()
    wait(browser, lambda d: "_action=compose" not in d.current_url, timeout=60)

    # Sent through this host's submission port as the user (its own login), delivered to the peer.
    replies = wait_for_mail(lab, peer_user, f"Re: {subject}")
    assert len(replies) == 1, f"{peer_user} never got the reply"
    reply = lab.run(site["peer"], "cat", replies[0]).stdout
    assert f"Thanks {them}, reply to {subject}." in reply and "\nIn-Reply-To: " in reply
    # Submitted by Roundcube on the host itself, authenticated (ESMTPSA) as the user.
    assert f"by {name} (Postfix) with ESMTPSA" in reply


def https_get(site: dict, path: str) -> tuple[int, list[str]]:
    """GET https://<host><path> at its address, certificate verified: (status, Set-Cookie values)."""
    ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "ca" / "pebble-root.pem"))
    conn = http.client.HTTPSConnection(site["name"], 443, context=ctx, timeout=20)
    conn.sock = ctx.wrap_socket(socket.create_connection((site["ip"], 443), timeout=20),
                                server_hostname=site["name"])
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]


def test_roundcube_and_postfixadmin_session_cookies_are_secure_httponly(site):
    for path, cookie_name in (("/roundcube/", "roundcube_sessid"), ("/postfixadmin/login.php", "postfixadmin_session")):
        status, cookies = https_get(site, path)
        assert status == 200, path
        session = [c for c in cookies if c.startswith(cookie_name + "=")]
        assert session, f"{path}: no {cookie_name} cookie in {cookies}"
        attrs = [a.strip().lower() for a in session[0].split(";")]
        assert "secure" in attrs and "httponly" in attrs, session[0]


def test_postfixadmin_setup_php_is_closed(site):
    for path in ("/postfixadmin/setup.php", "/postfixadmin/upgrade.php"):
        assert https_get(site, path)[0] == 403, path


def test_postfixadmin_admin_logs_in_and_sees_the_pillar_domains(site, browser):
    name, domain = site["name"], site["domain"]
    pfa_login(browser, name)
    browser.get(f"https://{name}/postfixadmin/list.php?table=domain")
    page = wait(browser, EC.presence_of_element_located((By.TAG_NAME, "body"))).text
    shot(browser, f"postfixadmin-domains-{site['host']}.png")
    assert "database layout is outdated" not in page
    assert domain in page, f"{domain} missing from PostfixAdmin's domain list"
    assert site["other_domain"] not in page  # served by the other host only
    browser.get(f"https://{name}/postfixadmin/list-virtual.php?domain={domain}")
    virtual = wait(browser, EC.presence_of_element_located((By.TAG_NAME, "body"))).text
    assert site["user"] in virtual and f"info@{domain}" in virtual  # pillar's rows


def test_each_application_runs_as_its_own_user_and_reads_only_its_own_secrets(lab, site):
    host = site["host"]
    pools = lab.run(host, "sh", "-c", f"grep -h '^user = ' /etc/php/{site['php']}/fpm/pool.d/mailfleet-*.conf").stdout
    assert sorted(pools.split("\n")[:-1]) == ["user = mf-postfixadmin", "user = mf-roundcube"]
    for path, owner in (("/etc/roundcube/config.inc.php", "mf-roundcube"),
                        ("/etc/postfixadmin/config.local.php", "mf-postfixadmin"),
                        ("/etc/postfixadmin/dbconfig.inc.php", "mf-postfixadmin")):
        assert lab.run(host, "stat", "-c", "%U:%G %a", path).stdout.split() == [f"root:{owner}", "640"]
    for user, other in (("mf-roundcube", "/etc/postfixadmin/config.local.php"),
                        ("mf-postfixadmin", "/etc/roundcube/config.inc.php"),
                        ("www-data", "/etc/roundcube/config.inc.php")):
        assert lab.run(host, "setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                       "cat", other, check=False).returncode != 0, f"{user} reads {other}"


def test_postfixadmin_alias_delivers_and_survives_state_apply(lab, site, browser):
    host, name, domain, user = site["host"], site["name"], site["domain"], site["user"]
    local = tag("pfa")
    alias = f"{local}@{domain}"
    try:
        pfa_login(browser, name)
        browser.get(f"https://{name}/postfixadmin/edit.php?table=alias&domain={domain}")
        wait(browser, EC.presence_of_element_located((By.NAME, "value[localpart]"))).send_keys(local)
        Select(browser.find_element(By.NAME, "value[domain]")).select_by_value(domain)
        goto = browser.find_element(By.NAME, "value[goto]")
        goto.clear()
        goto.send_keys(user)
        submit = browser.find_element(By.NAME, "submit")
        submit.click()
        wait(browser, EC.staleness_of(submit))  # the answer page loaded
        shot(browser, f"postfixadmin-alias-{host}.png")
        assert f"The alias {alias} has been created" in browser.find_element(By.TAG_NAME, "body").text
        rows = lab.run(host, "mariadb", "-N", "-e",
                       f"SELECT goto, active FROM postfix.alias WHERE address = '{alias}'").stdout.split()
        assert rows == [user, "1"], browser.find_element(By.TAG_NAME, "body").text[:2000]

        def delivered(subject):
            swaks(lab, "outside", "--server", name, "--port", "25", "--ehlo", "outside.lab.test",
                  "--from", "friend@outside.lab.test", "--to", alias, "--header", f"Subject: {subject}")
            return wait_for_mail(lab, user, subject)

        assert delivered(tag("pfa-before")), f"mail to the PostfixAdmin alias never reached {user}"
        ret = lab.salt(name, "state.apply", timeout=900)
        assert not state_failures(ret), state_failures(ret)
        still = lab.run(host, "mariadb", "-N", "-e",
                        f"SELECT goto FROM postfix.alias WHERE address = '{alias}'").stdout.split()
        assert still == [user], "the sync removed PostfixAdmin's alias"
        assert delivered(tag("pfa-after")), "after state.apply the alias no longer delivers"
    finally:
        lab.run(host, "mariadb", "-e", f"DELETE FROM postfix.alias WHERE address = '{alias}'", check=False)


OUTSIDE_GET = r"""
import http.client, json, ssl, sys
host, scheme, path = sys.argv[1:4]
if scheme == "https":
    conn = http.client.HTTPSConnection(host, 443, context=ssl.create_default_context(), timeout=20)
else:
    conn = http.client.HTTPConnection(host, 80, timeout=20)
conn.request("GET", path)
resp = conn.getresponse()
print(json.dumps({"status": resp.status, "location": resp.getheader("Location"),
                  "body": resp.read(4000).decode("utf-8", "replace")}))
"""


def outside_get(lab, name: str, scheme: str, path: str) -> dict:
    return json.loads(lab.run("outside", "python3", "-c", OUTSIDE_GET, name, scheme, path).stdout)


def test_from_outside_postfixadmin_is_refused_and_roundcube_is_https_only(lab, site):
    name = site["name"]
    for path in ("/postfixadmin/", "/postfixadmin/login.php", "/postfixadmin/setup.php"):
        assert outside_get(lab, name, "https", path)["status"] == 403, path
    login = outside_get(lab, name, "https", "/roundcube/")  # certificate verified by outside's trust store
    assert login["status"] == 200 and 'id="login-form"' in login["body"]
    plain = outside_get(lab, name, "http", "/roundcube/")
    assert plain["status"] == 301 and plain["location"] == f"https://{name}/roundcube/"
