"""Roundcube and PostfixAdmin on mail01 (mail.webmail), driven by a real headless Chromium.

The browser runs on the lab machine (198.18.0.1, on PostfixAdmin's allow-list in the lab
pillar). It does not use the lab DNS: --host-resolver-rules maps mail01.lab.test to its
address. Trust: Python first verifies the certificate mail01 serves against the lab's Pebble
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

HOST = "mail01"
NAME = "mail01.lab.test"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
ALL_PASSWORDS = json.loads((Path(__file__).parent / "passwords.json").read_text())
ADMIN = "admin@lab.test"
PILLAR_DOMAINS = ["example-a.test"]  # the domain files that list mail01 under hosts
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def verified_leaf(ip: str) -> bytes:
    """The certificate mail01 serves on 443, verified against the lab's Pebble root."""
    ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "ca" / "pebble-root.pem"))
    with socket.create_connection((ip, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=NAME) as tls:
            return tls.getpeercert(binary_form=True)


def spki_pin(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture(scope="module")
def webmail(lab, converged):
    """mail01 converged with the webmail switch on (lab pillar)."""
    return lab.ip(HOST)


@pytest.fixture
def browser(webmail, tmp_path):
    pin = spki_pin(verified_leaf(webmail))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900",
                f"--host-resolver-rules=MAP {NAME} {webmail}",
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


def roundcube_login(driver, address: str):
    driver.get(f"https://{NAME}/roundcube/")
    driver.find_element(By.ID, "rcmloginuser").send_keys(address)
    driver.find_element(By.ID, "rcmloginpwd").send_keys(PASSWORDS[address])
    driver.find_element(By.ID, "rcmloginsubmit").click()


def pfa_login(driver):
    driver.get(f"https://{NAME}/postfixadmin/login.php")
    driver.find_element(By.ID, "fUsername").send_keys(ADMIN)
    driver.find_element(By.ID, "fPassword").send_keys(ALL_PASSWORDS[ADMIN])
    driver.find_element(By.NAME, "submit").click()
    wait(driver, lambda d: "login.php" not in d.current_url)


def test_roundcube_alice_reads_bobs_mail_and_her_reply_reaches_bob(lab, browser):
    subject = tag("rc")
    # Delivered by SMTP: bob submits on mail02:587, mail02 relays to mail01:25.
    swaks(lab, "outside", "--server", "mail02.lab.test", "--port", "587", "--tls", "--auth", "PLAIN",
          "--auth-user", "bob@example-b.test", "--auth-password", PASSWORDS["bob@example-b.test"],
          "--from", "bob@example-b.test", "--to", "alice@example-a.test",
          "--header", f"Subject: {subject}", "--body", f"Hello Alice, {subject} here.")
    assert wait_for_mail(lab, "alice@example-a.test", subject), "alice never got bob's message"

    roundcube_login(browser, "alice@example-a.test")
    row = wait(browser, EC.presence_of_element_located(
        (By.XPATH, f"//table[@id='messagelist']//tr[contains(., '{subject}')]")))
    assert "mailfleet lab webmail :: Inbox" in browser.title  # product_name from pillar
    inbox = shot(browser, "roundcube-inbox-mail01.png")
    assert inbox.stat().st_size > 10_000

    ActionChains(browser).double_click(row).perform()
    wait(browser, lambda d: "_action=show" in d.current_url)
    assert wait(browser, EC.presence_of_element_located((By.CSS_SELECTOR, "h2.subject"))).text == subject
    assert f"Hello Alice, {subject} here." in browser.find_element(By.TAG_NAME, "body").text
    shot(browser, "roundcube-message-mail01.png")

    browser.find_element(By.XPATH, "//a[contains(concat(' ', @class, ' '), ' reply ') "
                                   "and normalize-space(.)='Reply']").click()
    wait(browser, lambda d: "_action=compose" in d.current_url)
    subject_field = wait(browser, EC.presence_of_element_located((By.ID, "compose-subject")))
    assert subject_field.get_attribute("value") == f"Re: {subject}"
    body = browser.find_element(By.ID, "composebody")
    body.send_keys(f"Thanks Bob, reply to {subject}.\n")
    browser.find_element(By.CSS_SELECTOR, "button.btn-primary.send").click()
    wait(browser, lambda d: "_action=compose" not in d.current_url, timeout=60)

    # Sent through mail01's submission port as alice (her own login), delivered to bob.
    replies = wait_for_mail(lab, "bob@example-b.test", f"Re: {subject}")
    assert len(replies) == 1, "bob never got alice's reply"
    reply = lab.run("mail02", "cat", replies[0]).stdout
    assert f"Thanks Bob, reply to {subject}." in reply and "\nIn-Reply-To: " in reply
    # Submitted by Roundcube on mail01 itself, authenticated (ESMTPSA) as alice.
    assert "by mail01.lab.test (Postfix) with ESMTPSA" in reply


def https_get(ip: str, path: str) -> tuple[int, list[str]]:
    """GET https://mail01.lab.test<path> at `ip`, certificate verified: (status, Set-Cookie values)."""
    ctx = ssl.create_default_context(cafile=str(fleet.SHARED / "ca" / "pebble-root.pem"))
    conn = http.client.HTTPSConnection(NAME, 443, context=ctx, timeout=20)
    conn.sock = ctx.wrap_socket(socket.create_connection((ip, 443), timeout=20), server_hostname=NAME)
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]


def test_roundcube_and_postfixadmin_session_cookies_are_secure_httponly(webmail):
    for path, cookie_name in (("/roundcube/", "roundcube_sessid"), ("/postfixadmin/login.php", "postfixadmin_session")):
        status, cookies = https_get(webmail, path)
        assert status == 200, path
        session = [c for c in cookies if c.startswith(cookie_name + "=")]
        assert session, f"{path}: no {cookie_name} cookie in {cookies}"
        attrs = [a.strip().lower() for a in session[0].split(";")]
        assert "secure" in attrs and "httponly" in attrs, session[0]


def test_postfixadmin_setup_php_is_closed(webmail):
    for path in ("/postfixadmin/setup.php", "/postfixadmin/upgrade.php"):
        assert https_get(webmail, path)[0] == 403, path


def test_postfixadmin_admin_logs_in_and_sees_the_pillar_domains(browser):
    pfa_login(browser)
    browser.get(f"https://{NAME}/postfixadmin/list.php?table=domain")
    page = wait(browser, EC.presence_of_element_located((By.TAG_NAME, "body"))).text
    shot(browser, "postfixadmin-domains-mail01.png")
    assert "database layout is outdated" not in page
    for domain in PILLAR_DOMAINS:
        assert domain in page, f"{domain} missing from PostfixAdmin's domain list"
    assert "example-b.test" not in page  # served by mail02 only
    browser.get(f"https://{NAME}/postfixadmin/list-virtual.php?domain=example-a.test")
    virtual = wait(browser, EC.presence_of_element_located((By.TAG_NAME, "body"))).text
    assert "alice@example-a.test" in virtual and "info@example-a.test" in virtual  # pillar's rows


def test_each_application_runs_as_its_own_user_and_reads_only_its_own_secrets(lab, webmail):
    pools = lab.run(HOST, "sh", "-c", "grep -h '^user = ' /etc/php/8.2/fpm/pool.d/mailfleet-*.conf").stdout
    assert sorted(pools.split("\n")[:-1]) == ["user = mf-postfixadmin", "user = mf-roundcube"]
    for path, owner in (("/etc/roundcube/config.inc.php", "mf-roundcube"),
                        ("/etc/postfixadmin/config.local.php", "mf-postfixadmin"),
                        ("/etc/postfixadmin/dbconfig.inc.php", "mf-postfixadmin")):
        assert lab.run(HOST, "stat", "-c", "%U:%G %a", path).stdout.split() == [f"root:{owner}", "640"]
    for user, other in (("mf-roundcube", "/etc/postfixadmin/config.local.php"),
                        ("mf-postfixadmin", "/etc/roundcube/config.inc.php"),
                        ("www-data", "/etc/roundcube/config.inc.php")):
        assert lab.run(HOST, "setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups",
                       "cat", other, check=False).returncode != 0, f"{user} reads {other}"


def test_postfixadmin_alias_delivers_and_survives_state_apply(lab, browser):
    local = tag("pfa")
    alias = f"{local}@example-a.test"
    try:
        pfa_login(browser)
        browser.get(f"https://{NAME}/postfixadmin/edit.php?table=alias&domain=example-a.test")
        wait(browser, EC.presence_of_element_located((By.NAME, "value[localpart]"))).send_keys(local)
        Select(browser.find_element(By.NAME, "value[domain]")).select_by_value("example-a.test")
        goto = browser.find_element(By.NAME, "value[goto]")
        goto.clear()
        goto.send_keys("alice@example-a.test")
        submit = browser.find_element(By.NAME, "submit")
        submit.click()
        wait(browser, EC.staleness_of(submit))  # the answer page loaded
        shot(browser, "postfixadmin-alias-mail01.png")
        assert f"The alias {alias} has been created" in browser.find_element(By.TAG_NAME, "body").text
        rows = lab.run(HOST, "mariadb", "-N", "-e",
                       f"SELECT goto, active FROM postfix.alias WHERE address = '{alias}'").stdout.split()
        assert rows == ["alice@example-a.test", "1"], browser.find_element(By.TAG_NAME, "body").text[:2000]

        def delivered(subject):
            swaks(lab, "outside", "--server", NAME, "--port", "25", "--ehlo", "outside.lab.test",
                  "--from", "friend@outside.lab.test", "--to", alias, "--header", f"Subject: {subject}")
            return wait_for_mail(lab, "alice@example-a.test", subject)

        assert delivered(tag("pfa-before")), "mail to the PostfixAdmin alias never reached alice"
        ret = lab.salt(NAME, "state.apply", timeout=900)
        assert not state_failures(ret), state_failures(ret)
        still = lab.run(HOST, "mariadb", "-N", "-e",
                        f"SELECT goto FROM postfix.alias WHERE address = '{alias}'").stdout.split()
        assert still == ["alice@example-a.test"], "the sync removed PostfixAdmin's alias"
        assert delivered(tag("pfa-after")), "after state.apply the alias no longer delivers"
    finally:
        lab.run(HOST, "mariadb", "-e", f"DELETE FROM postfix.alias WHERE address = '{alias}'", check=False)


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


def outside_get(lab, scheme: str, path: str) -> dict:
    return json.loads(lab.run("outside", "python3", "-c", OUTSIDE_GET, NAME, scheme, path).stdout)


def test_from_outside_postfixadmin_is_refused_and_roundcube_is_https_only(lab, webmail):
    for path in ("/postfixadmin/", "/postfixadmin/login.php", "/postfixadmin/setup.php"):
        assert outside_get(lab, "https", path)["status"] == 403, path
    login = outside_get(lab, "https", "/roundcube/")  # certificate verified by outside's trust store
    assert login["status"] == 200 and 'id="login-form"' in login["body"]
    plain = outside_get(lab, "http", "/roundcube/")
    assert plain["status"] == 301 and plain["location"] == f"https://{NAME}/roundcube/"
    assert "login-form" not in plain["body"]
    assert outside_get(lab, "http", "/postfixadmin/")["status"] == 301
