"""
The protocol clients of the mail host's self-check (``mailcheck.ritual``): one small
function per exchange (SMTP banner and EHLO, a relay attempt, submission with STARTTLS and
AUTH, IMAPS login, a port that must stay closed, A and PTR lookups), each returning the
verdict of ``mailfleet_mailcheck_verdicts``. Never sends DATA, never sends the probe
password before TLS is verified and the certificate names the host. Imported plainly (Salt
puts the utils directories on ``sys.path``).
"""
import errno
import imaplib
import ipaddress
import secrets
import smtplib
import socket
import ssl

import dns.exception
import dns.resolver
import dns.reversename

from mailfleet_mailcheck_verdicts import (
    auth_before_tls_verdict,
    bad_password_verdict,
    cert_verdict,
    closed_verdict,
    code_class,
    fcrdns_verdict,
    message_text,
    parse_ehlo,
    relay_verdict,
    reply_text,
    RELAY_TEST_RCPT,
    result,
    smtp_verdict,
    steps_verdict,
)

__virtualname__ = "mailfleet_mailcheck_probes"



def __virtual__():
    return __virtualname__


class _SMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to a given address but uses the host name for SNI and
    the EHLO, so the certificate is checked against the name and not the address
    (smtplib keeps the name for ``starttls()`` in ``_host``)."""

    def __init__(self, address, host, timeout):
        self._address = address
        super().__init__(local_hostname=host, timeout=timeout)
        self._host = host

    def _get_socket(self, host, port, timeout):
        return socket.create_connection((self._address, port), timeout)


class _IMAPS(imaplib.IMAP4_SSL):
    """IMAP4_SSL to a given address, with the host name for SNI (imaplib connects to, and
    sends as SNI, the one name it is given)."""

    def __init__(self, address, host, port, ssl_context, timeout):
        self._address = address
        super().__init__(host, port, ssl_context=ssl_context, timeout=timeout)

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._address, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


def _tls_context(cafile):
    """Chain verified against ``cafile`` only; the name is checked by cert_verdict(), which
    can then say which names the certificate does carry."""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _exc(exc):
    """An exception as a short reason."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not verified: {exc.verify_message or exc.reason}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return reply_text(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"server disconnected ({exc})"
    return f"{type(exc).__name__}: {exc}"


def _quit(client):
    try:
        client.quit()
    except Exception:  # noqa: BLE001
        try:
            client.close()
        except Exception:  # noqa: BLE001
            pass


def _smtp_open(ip, host, port, timeout):
    """Connect; returns (client, banner_code, banner_msg)."""
    client = _SMTP(ip, host, timeout)
    try:
        code, msg = client.connect(host, port)
    except BaseException:
        client.close()
        raise
    return client, code, msg


def _starttls(client, host, cafile):
    """STARTTLS with verification, then a fresh EHLO. Returns ``(ok, text, peercert)``."""
    code, msg = client.starttls(context=_tls_context(cafile))
    # smtplib raises on a non-220 reply to STARTTLS; here the handshake is done and verified.
    sock = client.sock
    peercert = sock.getpeercert()
    text = f"STARTTLS {reply_text(code, msg)}, {sock.version()} {sock.cipher()[0]}, chain verified"
    client.ehlo(host)
    return True, text, peercert


def check_smtp(host, ip, port, timeout):
    """Banner, EHLO, STARTTLS offered."""
    name = f"smtp-{port}"
    try:
        client, code, msg = _smtp_open(ip, host, port, timeout)
    except Exception as exc:  # noqa: BLE001
        return result(name, False, f"connect {ip}:{port}: {_exc(exc)}")
    try:
        ehlo_code, ehlo_msg = client.ehlo(host)
        ok, detail = smtp_verdict(host, code, msg, ehlo_code, ehlo_msg)
    except Exception as exc:  # noqa: BLE001
        ok, detail = False, f"banner {reply_text(code, msg)}; EHLO: {_exc(exc)}"
    _quit(client)
    return result(name, ok, detail)


def check_relay(host, ip, port, sender, timeout):
    """An unauthenticated client asks to relay to a foreign domain; DATA is never sent."""
    try:
        client, code, msg = _smtp_open(ip, host, port, timeout)
    except Exception as exc:  # noqa: BLE001
        return result("relay-refused", False, f"connect {ip}:{port}: {_exc(exc)}")
    try:
        if code != 220:
            return result("relay-refused", False, f"relay not tested, banner: {reply_text(code, msg)}")
        ehlo_code, ehlo_msg = client.ehlo(host)
        if ehlo_code != 250:
            return result("relay-refused", False,
                          f"relay not tested, EHLO: {reply_text(ehlo_code, ehlo_msg)}")
        mcode, mmsg = client.mail(sender)
        if code_class(mcode) != 2:
            return result("relay-refused", False,
                          f"relay not tested, MAIL FROM:<{sender}>: {reply_text(mcode, mmsg)}")
        rcode, rmsg = client.rcpt(RELAY_TEST_RCPT)
        ok, detail = relay_verdict(rcode, rmsg)
        client.rset()
        return result("relay-refused", ok, detail)
    except Exception as exc:  # noqa: BLE001
        return result("relay-refused", False, f"relay test interrupted: {_exc(exc)}")
    finally:
        _quit(client)


def _auth_plain(client, user, password):
    """AUTH PLAIN on an established (TLS) session; returns (code, msg), never raises on a
    refusal."""
    client.user, client.password = user, password
    try:
        return client.auth("PLAIN", client.auth_plain)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code, exc.smtp_error
    finally:
        client.user = client.password = None


def submission_steps(host, ip, port, cafile, user, password, timeout):
    """
    One submission session: no AUTH before STARTTLS, STARTTLS verified and naming the
    host, AUTH PLAIN for the probe mailbox. Returns ``(steps, go_on)``: the ``(ok, text)``
    steps, and whether the wrong-password test makes sense (TLS verified and naming the
    host, so a password may be sent, and the probe login did not fail).
    """
    steps = []
    try:
        client, code, msg = _smtp_open(ip, host, port, timeout)
    except Exception as exc:  # noqa: BLE001
        return [(False, f"connect {ip}:{port}: {_exc(exc)}")], False
    stage = "EHLO"
    try:
        if code != 220:
            return [(False, f"banner is not 220: {reply_text(code, msg)}")], False
        ehlo_code, ehlo_msg = client.ehlo(host)
        if ehlo_code != 250:
            return [(False, f"EHLO: {reply_text(ehlo_code, ehlo_msg)}")], False
        _, features = parse_ehlo(ehlo_msg)
        # A bare AUTH PLAIN, no initial response: no credential goes out in plaintext.
        stage = "AUTH before STARTTLS"
        acode, amsg = client.docmd("AUTH", "PLAIN")
        if acode == 334:
            client.docmd("*")  # RFC 4954 section 4: "*" cancels the exchange
        steps.append(auth_before_tls_verdict("AUTH" in features, acode, amsg))
        if "STARTTLS" not in features:
            steps.append((False, "STARTTLS not offered"))
            return steps, False
        stage = "STARTTLS"
        try:
            _, text, peercert = _starttls(client, host, cafile)
        except Exception as exc:  # noqa: BLE001
            steps.append((False, f"STARTTLS: {_exc(exc)}"))
            steps.append((False, "AUTH not tried (TLS not verified)"))
            return steps, False
        steps.append((True, text))
        cert_ok, cert_text = cert_verdict(host, peercert)
        steps.append((cert_ok, cert_text))
        if not cert_ok:
            steps.append((False, "AUTH not tried (certificate does not name the host)"))
            return steps, False
        if not (user and password):
            steps.append((False, "AUTH not tried: no probe credentials (pillar mailfleet:probe)"))
            return steps, True
        if not client.has_extn("auth"):
            steps.append((False, "AUTH not advertised after STARTTLS"))
        stage = f"AUTH PLAIN as {user}"
        lcode, lmsg = _auth_plain(client, user, password)
        if lcode == 235:
            steps.append((True, f"AUTH PLAIN as {user}: {reply_text(lcode, lmsg)}"))
            return steps, True
        steps.append((False, f"AUTH PLAIN as {user} refused: {reply_text(lcode, lmsg)}"))
        # No wrong-password attempt on top: each failure makes Dovecot delay this
        # address's next logins longer (2, 4, 8, 15 s).
        steps.append((False, "wrong-password test not tried (the probe login failed)"))
        return steps, False
    except Exception as exc:  # noqa: BLE001
        steps.append((False, f"{stage}: {_exc(exc)}"))
        return steps, False
    finally:
        _quit(client)


def wrong_password_step(host, ip, port, cafile, user, timeout):
    """A fresh session, STARTTLS, AUTH PLAIN with a random wrong password: must be 535.
    Returns one ``(ok, text)`` step."""
    try:
        client, _, _ = _smtp_open(ip, host, port, timeout)
    except Exception as exc:  # noqa: BLE001
        return False, f"wrong-password test: connect: {_exc(exc)}"
    try:
        client.ehlo(host)
        _starttls(client, host, cafile)
        wrong = "mailcheck-wrong-" + secrets.token_urlsafe(12)
        return bad_password_verdict(*_auth_plain(client, user or f"mailcheck@{host}", wrong))
    except Exception as exc:  # noqa: BLE001
        return False, f"wrong-password test: {_exc(exc)}"
    finally:
        _quit(client)


def check_submission(host, ip, port, cafile, user, password, timeout):
    """Submission: no AUTH before STARTTLS; STARTTLS verified and
    naming the host; the probe mailbox logs in; a wrong password is refused (535)."""
    steps, go_on = submission_steps(host, ip, port, cafile, user, password, timeout)
    if go_on:
        steps.append(wrong_password_step(host, ip, port, cafile, user, timeout))
    return result(f"submission-{port}", *steps_verdict(steps))


def check_imaps(host, ip, port, cafile, user, password, timeout):
    """IMAPS: TLS verified and naming the host, LOGIN, SELECT."""
    name = f"imaps-{port}"
    steps = []
    try:
        client = _IMAPS(ip, host, port, _tls_context(cafile), timeout)
    except Exception as exc:  # noqa: BLE001
        return result(name, False, f"connect {ip}:{port}: {_exc(exc)}")
    stage = "greeting"
    try:
        sock = client.sock
        greeting = message_text(client.welcome)
        steps.append((True, f"{sock.version()} {sock.cipher()[0]}, chain verified; {greeting}"))
        cert_ok, cert_text = cert_verdict(host, sock.getpeercert())
        steps.append((cert_ok, cert_text))
        if not cert_ok:
            steps.append((False, "LOGIN not tried (certificate does not name the host)"))
            return result(name, *steps_verdict(steps))
        if not (user and password):
            steps.append((False, "LOGIN not tried: no probe credentials (pillar mailfleet:probe)"))
            return result(name, *steps_verdict(steps))
        stage = f"LOGIN as {user}"
        try:
            typ, data = client.login(user, password)
        except imaplib.IMAP4.error as exc:
            said = exc.args[0] if exc.args else exc
            steps.append((False, f"LOGIN as {user} refused: {message_text(said)}"))
            return result(name, *steps_verdict(steps))
        steps.append((typ == "OK", f"LOGIN as {user}: {typ} {message_text(data[-1] if data else '')}"))
        stage = "SELECT INBOX"
        typ, data = client.select("INBOX", readonly=True)
        said = message_text(data[0] if data else "")
        if typ == "OK":
            steps.append((True, f"SELECT INBOX: OK, {said} messages"))
        else:
            steps.append((False, f"SELECT INBOX: {typ} {said}"))
        return result(name, *steps_verdict(steps))
    except Exception as exc:  # noqa: BLE001
        steps.append((False, f"{stage}: {_exc(exc)}"))
        return result(name, *steps_verdict(steps))
    finally:
        try:
            client.logout()
        except Exception:  # noqa: BLE001
            pass


def probe_port(ip, port, timeout):
    """Try a TCP connection: ``(outcome, info)`` with outcome refused/timeout/unreachable/
    open (info: the first bytes the service sent, if any)."""
    try:
        sock = socket.create_connection((ip, port), timeout)
    except ConnectionRefusedError:
        return "refused", ""
    except (socket.timeout, TimeoutError):
        return "timeout", ""
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES):
            return "unreachable", exc.strerror or str(exc)
        return "error", f"{type(exc).__name__}: {exc}"
    with sock:
        sock.settimeout(min(2.0, timeout))
        try:
            banner = message_text(sock.recv(200))
        except OSError:
            banner = ""
    return "open", (f"banner {banner!r}" if banner else "connection accepted")


def check_closed(ip, port, timeout):
    return result(f"closed-{port}", *closed_verdict(port, *probe_port(ip, port, timeout)))


def _resolver(timeout):
    res = dns.resolver.Resolver()
    res.lifetime = timeout
    return res


def resolve_addresses(name, timeout, rdtype="A"):
    """``(addresses, error)`` for ``name``; the error names the DNS outcome."""
    try:
        answer = _resolver(timeout).resolve(name, rdtype)
        return [rr.to_text() for rr in answer], None
    except dns.resolver.NXDOMAIN:
        return [], "NXDOMAIN"
    except dns.resolver.NoAnswer:
        return [], f"no {rdtype} record"
    except dns.exception.Timeout:
        return [], "DNS timeout"
    except dns.exception.DNSException as exc:
        return [], f"{type(exc).__name__}: {exc}"


def resolve_ptr(ip, timeout):
    """``(names, error)`` for the PTR of ``ip``."""
    try:
        answer = _resolver(timeout).resolve(dns.reversename.from_address(ip), "PTR")
        return [rr.to_text() for rr in answer], None
    except dns.resolver.NXDOMAIN:
        return [], "NXDOMAIN"
    except dns.resolver.NoAnswer:
        return [], "no PTR record"
    except dns.exception.Timeout:
        return [], "DNS timeout"
    except dns.exception.DNSException as exc:
        return [], f"{type(exc).__name__}: {exc}"


def check_fcrdns(host, ip, timeout):
    rdtype = "AAAA" if ipaddress.ip_address(ip).version == 6 else "A"
    addrs, a_err = resolve_addresses(host, timeout, rdtype)
    names, ptr_err = resolve_ptr(ip, timeout)
    return result("fcrdns", *fcrdns_verdict(host, ip, addrs, names, a_err, ptr_err))
