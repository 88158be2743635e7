"""
The seed article's "ritual" (section 10, plus the red-team port check of section 11), run
by a mail host against itself with real clients: SMTP on 25, submission with STARTTLS and
AUTH on 587, IMAPS on 993, an open-relay attempt, the ports that must stay closed, and
forward-confirmed reverse DNS.

Every check returns ``{"check": name, "ok": bool, "detail": why}``; ``detail`` quotes what
the server said (the SMTP reply, the TLS error, the names on the certificate).

The host connects to its own public address, so the traffic goes over the loopback
interface and the host firewall is not in the path: a "closed" port here means nothing
listens on it. The firewall itself is only seen from another host.

The module never sends DATA, and never sends the probe password before TLS is verified and
the certificate names the host. The relay check and the wrong-password check leave one
"Relay access denied" and one "authentication failed" line per run in the host's mail log,
from the host's own address.

Pillar (read unmasked, 3008 masks ``pillar.get`` in execution modules):

- ``mailfleet:host:myhostname``: the host name to test (default: the minion id)
- ``mailfleet:probe:address`` / ``mailfleet:probe:password``: a real mailbox to log in with

CLI Example:

.. code-block:: bash

    salt '*mail*' mailcheck.ritual
    salt mail01.lab.test mailcheck.ritual timeout=5
    salt mail01.lab.test mailcheck.ritual host=mail01.lab.test ip=198.18.0.11
    salt mail01.lab.test mailcheck.ritual checks=smtp,relay
    salt-call mailcheck.report
"""
import errno
import imaplib
import ipaddress
import json
import secrets
import smtplib
import socket
import ssl

from salt.exceptions import CommandExecutionError

try:
    import dns.exception
    import dns.resolver
    import dns.reversename

    HAS_DNSPYTHON = True
except ImportError:  # pragma: no cover - dnspython is in the minion's venv
    HAS_DNSPYTHON = False

__virtualname__ = "mailcheck"

DEFAULT_CAFILE = "/etc/ssl/certs/ca-certificates.crt"
DEFAULT_PORTS = {"smtp": 25, "submission": 587, "imaps": 993, "closed": [143, 110]}
RELAY_TEST_RCPT = "mailcheck@relay-test.invalid"  # RFC 2606: .invalid never resolves
CHECK_GROUPS = ("smtp", "submission", "imaps", "relay", "closed", "fcrdns")


def __virtual__():
    if not HAS_DNSPYTHON:
        return False, "mailcheck needs dnspython (pip install dnspython)"
    return __virtualname__


# ---------------------------------------------------------------------------------------
# Pure logic (unit-tested in tests/unit/test_mailcheck_module.py)
# ---------------------------------------------------------------------------------------


def result(check, ok, detail):
    """One line of the ritual's report."""
    return {"check": str(check), "ok": bool(ok), "detail": str(detail)}


def norm_name(name):
    """Lower-case a DNS name and drop its trailing dot: ``Mail01.Lab.Test.`` -> ``mail01.lab.test``."""
    return str(name or "").strip().rstrip(".").lower()


def _text(msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return " / ".join(line.strip() for line in str(msg or "").splitlines() if line.strip())


def reply_text(code, msg):
    """
    An SMTP reply as one line: ``(250, b"2.1.0 Ok")`` -> ``"250 2.1.0 Ok"``; a multi-line
    reply (lines joined by newline, as smtplib returns them) is joined with `` / ``.
    """
    text = _text(msg)
    return f"{code} {text}".strip()


def parse_ehlo(msg):
    """
    The EHLO reply text (without codes, one line per keyword, as smtplib returns it) as
    ``(greeting_name, {KEYWORD: params})``. RFC 5321 4.1.1.1: the first line names the
    server, each further line is ``ehlo-keyword *(SP ehlo-param)``; keywords are
    case-insensitive and returned upper-cased. ``AUTH=PLAIN`` (an old form) is read as AUTH.
    """
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    lines = [line.strip() for line in str(msg or "").splitlines() if line.strip()]
    if not lines:
        return "", {}
    greeting = lines[0].split()[0] if lines[0].split() else ""
    features = {}
    for line in lines[1:]:
        keyword, _, params = line.partition(" ")
        if keyword.upper().startswith("AUTH="):
            keyword, params = "AUTH", keyword[5:] + (" " + params if params else "")
        keyword = keyword.upper()
        params = params.strip()
        if keyword == "AUTH" and keyword in features:
            params = " ".join(dict.fromkeys((features[keyword] + " " + params).split()))
        features[keyword] = params
    return greeting, features


def code_class(code):
    """``2`` for 2xx, ``4`` for 4xx, ``5`` for 5xx, ``0`` when there is no valid reply code."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        return 0
    return code // 100 if 200 <= code <= 599 else 0


def smtp_verdict(host, banner_code, banner_msg, ehlo_code, ehlo_msg):
    """
    Port 25 as the seed's telnet session sees it: a 220 banner naming the host, an answered
    EHLO, STARTTLS offered. Returns ``(ok, detail)``.
    """
    banner = reply_text(banner_code, banner_msg)
    if banner_code != 220:
        return False, f"banner is not 220: {banner}"
    banner_words = _text(banner_msg).split()
    banner_name = norm_name(banner_words[0]) if banner_words else ""
    if ehlo_code != 250:
        return False, f"banner {banner}; EHLO not accepted: {reply_text(ehlo_code, ehlo_msg)}"
    greeting, features = parse_ehlo(ehlo_msg)
    problems = []
    if banner_name != norm_name(host):
        problems.append(f"banner names {banner_name or 'nothing'}, not {norm_name(host)}")
    if norm_name(greeting) != norm_name(host):
        problems.append(f"EHLO reply names {norm_name(greeting) or 'nothing'}, not {norm_name(host)}")
    if "STARTTLS" not in features:
        problems.append("STARTTLS not offered")
    ext = " ".join(sorted(features))
    if problems:
        return False, "; ".join(problems) + f" (banner {banner}; EHLO 250: {ext})"
    return True, f"banner {banner}; EHLO 250: {ext}"


def relay_verdict(code, msg):
    """
    An unauthenticated RCPT to a foreign domain must be refused as a relay attempt: a 4xx
    or 5xx reply saying "Relay access denied" (Postfix reject_unauth_destination: 554 5.7.1,
    or 454 4.7.1 with defer_unauth_destination / soft_bounce). Returns ``(ok, detail)``.
    """
    text = reply_text(code, msg)
    cls = code_class(code)
    if cls == 2:
        return False, f"OPEN RELAY: RCPT TO:<{RELAY_TEST_RCPT}> accepted: {text}"
    if cls in (4, 5) and "relay access denied" in text.lower():
        return True, f"RCPT TO:<{RELAY_TEST_RCPT}> refused: {text}"
    if cls in (4, 5):
        return False, f"RCPT refused, but not as a relay attempt (relay not tested): {text}"
    return False, f"no valid reply to RCPT: {text}"


def auth_before_tls_verdict(advertised, code, msg):
    """
    Submission must not take AUTH before STARTTLS (Postfix smtpd_tls_auth_only, or
    smtpd_tls_security_level=encrypt which answers 530 5.7.0). ``advertised`` says whether
    the pre-TLS EHLO listed AUTH; ``code``/``msg`` is the reply to a bare ``AUTH PLAIN``
    (no credentials sent). Returns ``(ok, detail)``.
    """
    said = "AUTH advertised before STARTTLS" if advertised else "AUTH not advertised before STARTTLS"
    text = reply_text(code, msg)
    if code == 334:
        return False, f"{said}, and AUTH PLAIN was accepted in plaintext ({text})"
    if code_class(code) == 5:
        return True, f"{said}; AUTH PLAIN refused: {text}"
    if code_class(code) == 4:
        return False, f"{said}; AUTH PLAIN deferred, not refused: {text}"
    return False, f"{said}; unexpected reply to AUTH PLAIN: {text}"


def bad_password_verdict(code, msg):
    """A wrong password must get 535 (RFC 4954: authentication credentials invalid)."""
    text = reply_text(code, msg)
    if code == 535:
        return True, f"wrong password refused: {text}"
    if code == 235:
        return False, f"WRONG PASSWORD ACCEPTED: {text}"
    return False, f"wrong password answered {text}, expected 535"


def closed_verdict(port, outcome, info=""):
    """
    A port that must stay closed (seed section 11: 143, 110): ``outcome`` is ``refused``,
    ``timeout``, ``unreachable`` (ICMP reject) or ``open``; ``info`` the banner or error.
    """
    if outcome == "refused":
        return True, f"port {port}: connection refused"
    if outcome == "timeout":
        return True, f"port {port}: connection timed out"
    if outcome == "unreachable":
        return True, f"port {port}: unreachable ({info})"
    if outcome == "open":
        return False, f"port {port} is OPEN" + (f": {info}" if info else "")
    return False, f"port {port}: {outcome} {info}".strip()


def cert_names(peercert):
    """The DNS names of a certificate (``ssl.SSLSocket.getpeercert()`` dict): its
    subjectAltName DNS entries. RFC 6125 6.4.4: the CN is not consulted when SANs exist,
    and Python's ssl never falls back to it; neither do we."""
    return [norm_name(value) for kind, value in (peercert or {}).get("subjectAltName", ())
            if kind == "DNS"]


def cert_common_name(peercert):
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


def name_matches(host, pattern):
    """
    Does certificate name ``pattern`` cover ``host``? RFC 6125 6.4.3 as browsers apply it:
    case-insensitive; a wildcard only as the whole left-most label, standing for exactly
    one label, and never on a public-suffix-like two-label name (``*.test``).
    """
    host, pattern = norm_name(host), norm_name(pattern)
    if not host or not pattern:
        return False
    if "*" not in pattern:
        return host == pattern
    first, _, rest = pattern.partition(".")
    if first != "*" or "*" in rest or rest.count(".") < 1:
        return False
    h_first, _, h_rest = host.partition(".")
    return bool(h_first) and h_rest == rest


def cert_verdict(host, peercert):
    """The verified certificate must name the host. Returns ``(ok, detail)``."""
    names = cert_names(peercert)
    expires = (peercert or {}).get("notAfter", "?")
    if not names:
        cn = cert_common_name(peercert)
        return False, f"certificate has no DNS subjectAltName (CN={cn or '-'})"
    if any(name_matches(host, n) for n in names):
        return True, f"certificate names {norm_name(host)} (SAN {', '.join(names)}; expires {expires})"
    return False, f"certificate does not name {norm_name(host)}: SAN {', '.join(names)}"


def fcrdns_verdict(host, ip, a_records, ptr_names, a_error=None, ptr_error=None):
    """
    Forward-confirmed reverse DNS (seed section 2, PTR): the host's A (AAAA for IPv6)
    records hold ``ip``, and the PTR of ``ip`` is the host. Names compare without case and
    trailing dot. Returns ``(ok, detail)``.
    """
    host = norm_name(host)
    a_set = {str(a) for a in a_records or ()}
    ptrs = [norm_name(p) for p in ptr_names or ()]
    problems = []
    if a_error:
        problems.append(f"A {host}: {a_error}")
    elif ip not in a_set:
        problems.append(f"A {host} = {', '.join(sorted(a_set)) or 'nothing'}, not {ip}")
    if ptr_error:
        problems.append(f"PTR {ip}: {ptr_error}")
    elif host not in ptrs:
        problems.append(f"PTR {ip} = {', '.join(ptrs) or 'nothing'}, not {host}")
    if problems:
        return False, "; ".join(problems)
    extra = [p for p in ptrs if p != host]
    note = f" (also PTR {', '.join(extra)})" if extra else ""
    return True, f"A {host} = {ip}; PTR {ip} = {host}{note}"


def steps_verdict(steps):
    """Fold ``[(ok, text), ...]`` into one ``(ok, detail)``: failing steps first."""
    failed = [text for ok, text in steps if not ok]
    if failed:
        return False, "; ".join(failed)
    return True, "; ".join(text for _, text in steps)


def _render(headers, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]
    out = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths[:-1])] + [str(row[-1])]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def table(results):
    """
    The ritual's results as a text table, one check a line, and a summary line.
    Pure: no network. ``results`` is a list of result dicts (or its JSON text).

    CLI Example:

    .. code-block:: bash

        salt-call mailcheck.table '[{"check": "smtp-25", "ok": true, "detail": "220 ..."}]'
    """
    if isinstance(results, str):
        results = json.loads(results)
    rows = [(r.get("check", "?"), "PASS" if r.get("ok") is True else "FAIL", r.get("detail", ""))
            for r in results or []]
    passed = sum(1 for r in rows if r[1] == "PASS")
    summary = f"{passed}/{len(rows)} checks passed" + ("" if passed == len(rows) else
                                                      f", {len(rows) - passed} FAILED")
    return _render(("CHECK", "RESULT", "DETAIL"), rows) + "\n" + summary


def select(checks):
    """The check groups to run: ``None`` = all; else a list or comma-separated string of
    group names (``smtp submission imaps relay closed fcrdns``)."""
    if checks is None or checks == "":
        return list(CHECK_GROUPS)
    if isinstance(checks, str):
        checks = checks.split(",")
    wanted = [str(c).strip().lower() for c in checks if str(c).strip()]
    unknown = [c for c in wanted if c not in CHECK_GROUPS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECK_GROUPS)}")
    return [c for c in CHECK_GROUPS if c in wanted]


def merge_ports(ports):
    """Default ports overridden by a ``{"smtp": 2525, "closed": [143]}`` dict."""
    merged = dict(DEFAULT_PORTS)
    if isinstance(ports, str):
        ports = json.loads(ports)
    for key, value in (ports or {}).items():
        if key not in merged:
            raise ValueError(f"unknown port key {key!r}; known: {', '.join(merged)}")
        if key == "closed":
            value = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
        else:
            value = int(value)
        merged[key] = value
    return merged


# ---------------------------------------------------------------------------------------
# Network: small functions, one protocol exchange each
# ---------------------------------------------------------------------------------------


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
    """Banner, EHLO, STARTTLS offered (seed section 10, part 1)."""
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
    """Submission (seed section 10, part 2): no AUTH before STARTTLS; STARTTLS verified and
    naming the host; the probe mailbox logs in; a wrong password is refused (535)."""
    steps, go_on = submission_steps(host, ip, port, cafile, user, password, timeout)
    if go_on:
        steps.append(wrong_password_step(host, ip, port, cafile, user, timeout))
    return result(f"submission-{port}", *steps_verdict(steps))


def check_imaps(host, ip, port, cafile, user, password, timeout):
    """IMAPS (seed section 10, part 2): TLS verified and naming the host, LOGIN, SELECT."""
    name = f"imaps-{port}"
    steps = []
    try:
        client = _IMAPS(ip, host, port, _tls_context(cafile), timeout)
    except Exception as exc:  # noqa: BLE001
        return result(name, False, f"connect {ip}:{port}: {_exc(exc)}")
    stage = "greeting"
    try:
        sock = client.sock
        greeting = _text(client.welcome)
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
            steps.append((False, f"LOGIN as {user} refused: {_text(said)}"))
            return result(name, *steps_verdict(steps))
        steps.append((typ == "OK", f"LOGIN as {user}: {typ} {_text(data[-1] if data else '')}"))
        stage = "SELECT INBOX"
        typ, data = client.select("INBOX", readonly=True)
        said = _text(data[0] if data else "")
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
            banner = _text(sock.recv(200))
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


# ---------------------------------------------------------------------------------------
# Salt entry points
# ---------------------------------------------------------------------------------------


def _pillar(key, default=None):
    return __salt__["pillar.get"](key, default, unmask=True)


def ritual(host=None, ip=None, cafile=None, timeout=10, address=None, password=None,
           ports=None, checks=None):
    """
    Run the ritual against this host; returns a list of
    ``{"check": str, "ok": bool, "detail": str}``.

    host
        Name to test (EHLO name, TLS name, FCrDNS). Default: pillar
        ``mailfleet:host:myhostname``, else the minion id.
    ip
        Address to connect to. Default: the A record of ``host`` (a failing lookup fails
        every network check, with the DNS error as the reason).
    cafile
        Trust anchors for certificate verification. Default: the system store
        ``/etc/ssl/certs/ca-certificates.crt``.
    timeout
        Seconds per network operation (connect, each reply, each DNS lookup).
    address, password
        Probe mailbox; default pillar ``mailfleet:probe:address`` / ``:password``.
        (Given on the command line they land in the job cache: use for wrong ones only.)
    ports
        Override ports: ``{"smtp": 25, "submission": 587, "imaps": 993, "closed": [143, 110]}``.
    checks
        Run only these groups: ``smtp,submission,imaps,relay,closed,fcrdns``.

    CLI Example:

    .. code-block:: bash

        salt '*mail*' mailcheck.ritual
        salt mail01.lab.test mailcheck.ritual timeout=5 checks=smtp,relay
        salt mail01.lab.test mailcheck.ritual ports='{"imaps": 143}'
        salt mail01.lab.test mailcheck.ritual password=wrong checks=submission,imaps
    """
    host = norm_name(host or _pillar("mailfleet:host:myhostname") or __opts__.get("id"))
    cafile = cafile or DEFAULT_CAFILE
    user = address or _pillar("mailfleet:probe:address")
    password = password if password is not None else _pillar("mailfleet:probe:password")
    try:
        timeout = float(timeout)
        port = merge_ports(ports)
        groups = select(checks)
        ip = str(ipaddress.ip_address(str(ip))) if ip else None
    except ValueError as exc:
        raise CommandExecutionError(f"mailcheck.ritual: {exc}") from exc

    dns_error = None
    if not ip:
        addrs, dns_error = resolve_addresses(host, timeout)
        ip = addrs[0] if addrs else None

    # The wrong-password attempt runs last: Dovecot delays every login from an address
    # after a failed one (auth penalty), which must not slow the probe's real logins.
    sub = {}

    def submission():
        steps, sub["go_on"] = submission_steps(host, ip, port["submission"], cafile, user,
                                                password, timeout)
        sub["steps"] = steps
        return result(f"submission-{port['submission']}", *steps_verdict(steps))

    plan = []
    if "smtp" in groups:
        plan.append((f"smtp-{port['smtp']}", lambda: check_smtp(host, ip, port["smtp"], timeout)))
    if "submission" in groups:
        plan.append((f"submission-{port['submission']}", submission))
    if "imaps" in groups:
        plan.append((f"imaps-{port['imaps']}", lambda: check_imaps(
            host, ip, port["imaps"], cafile, user, password, timeout)))
    if "relay" in groups:
        plan.append(("relay-refused", lambda: check_relay(
            host, ip, port["smtp"], user or f"mailcheck@{host}", timeout)))
    if "closed" in groups:
        for closed in port["closed"]:
            plan.append((f"closed-{closed}", lambda p=closed: check_closed(ip, p, timeout)))
    if "fcrdns" in groups:
        plan.append(("fcrdns", lambda: check_fcrdns(host, ip, timeout)))

    results = []
    for name, run in plan:
        if ip is None:
            results.append(result(name, False, f"not tested: no address for {host} (A: {dns_error})"))
            continue
        results.append(_guarded(name, run))
    if sub.get("go_on"):
        name = f"submission-{port['submission']}"
        where = next(i for i, r in enumerate(results) if r["check"] == name)
        step = _guarded(name, lambda: wrong_password_step(host, ip, port["submission"], cafile,
                                                          user, timeout))
        if isinstance(step, dict):  # the step crashed
            step = (False, step["detail"])
        results[where] = result(name, *steps_verdict(sub["steps"] + [step]))
    return results


def _guarded(name, run):
    """Run one check; a bug in it becomes a failing line, never a lost ritual."""
    try:
        return run()
    except Exception as exc:  # noqa: BLE001
        return result(name, False, f"check crashed: {type(exc).__name__}: {exc}")


def report(**kwargs):
    """
    Run the ritual and return its table as text (for ``salt-call`` at the host).

    CLI Example:

    .. code-block:: bash

        salt-call mailcheck.report --out=txt
        salt mail01.lab.test mailcheck.report timeout=5 --out=txt
    """
    kwargs = {k: v for k, v in kwargs.items() if not k.startswith("__")}
    return table(ritual(**kwargs))
