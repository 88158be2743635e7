"""
The verdicts of the mail host's self-check (``mailcheck.ritual``): what a server's SMTP,
submission, IMAPS, relay, closed-port and forward-confirmed reverse DNS answers mean, as
``{"check": name, "ok": bool, "detail": why}``. Pure (no sockets, no Salt), unit-tested in
tests/unit/test_mailcheck_module.py; the probes in ``mailfleet_mailcheck_probes`` feed it.
Imported plainly (Salt puts the utils directories on ``sys.path``).
"""
import json

import mailfleet_table

__virtualname__ = "mailfleet_mailcheck_verdicts"

DEFAULT_PORTS = {"smtp": 25, "submission": 587, "imaps": 993, "closed": [143, 110]}
CHECK_GROUPS = ("smtp", "submission", "imaps", "relay", "closed", "fcrdns")
RELAY_TEST_RCPT = "mailcheck@relay-test.invalid"  # RFC 2606: .invalid never resolves


def __virtual__():
    return __virtualname__


def result(check, ok, detail):
    """One line of the ritual's report."""
    return {"check": str(check), "ok": bool(ok), "detail": str(detail)}


def norm_name(name):
    """Lower-case a DNS name and drop its trailing dot: ``Mail01.Lab.Test.`` -> ``mail01.lab.test``."""
    return str(name or "").strip().rstrip(".").lower()


def message_text(msg):
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return " / ".join(line.strip() for line in str(msg or "").splitlines() if line.strip())


def reply_text(code, msg):
    """
    An SMTP reply as one line: ``(250, b"2.1.0 Ok")`` -> ``"250 2.1.0 Ok"``; a multi-line
    reply (lines joined by newline, as smtplib returns them) is joined with `` / ``.
    """
    text = message_text(msg)
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
    Port 25 as a telnet session sees it: a 220 banner naming the host, an answered
    EHLO, STARTTLS offered. Returns ``(ok, detail)``.
    """
    banner = reply_text(banner_code, banner_msg)
    if banner_code != 220:
        return False, f"banner is not 220: {banner}"
    banner_words = message_text(banner_msg).split()
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
    A port that must stay closed (the plaintext ports 143 and 110): ``outcome`` is ``refused``,
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
    Forward-confirmed reverse DNS (PTR): the host's A (AAAA for IPv6)
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
    return mailfleet_table.render(("CHECK", "RESULT", "DETAIL"), rows) + "\n" + summary


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
