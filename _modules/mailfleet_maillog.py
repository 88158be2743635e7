"""
mail.log detection core: a parser for the Postfix and Dovecot lines of ``/var/log/mail.log``,
an aggregator that turns events into ONE bounded report per interval, and a tailer that
follows the file across rotation and truncation. Pure Python, no Salt imports: the beacon or
engine that runs it on each minion is glue around these three pieces, and the unit tests import
the module directly (``import mailfleet_maillog``).

Line formats
------------
The syslog header is either rsyslog's default on Debian 12 (RFC 3339 high precision)::

    2026-11-25T19:48:13.125836+00:00 mail01 postfix/submission/smtpd[4692]: <message>

or the classic BSD form ``Nov 25 19:48:13 mail01 postfix/smtpd[4692]: <message>``. The tag
is ``syslog_name/process[pid]`` for Postfix (``postfix/smtpd``, ``postfix/submission/smtpd``,
``postfix-out/smtpd``...) and ``dovecot`` (with or without ``[pid]``) for Dovecot, whose
message then starts with its own process name (``imap-login:``, ``auth-worker(123):``).
The message formats are Postfix 3.7's (src/smtpd/smtpd.c, smtpd_sasl_glue.c,
src/postscreen/*.c) and Dovecot 2.3's (src/login-common/client-common.c,
src/auth/auth-request.c); the corpus in tests/unit/maillog_corpus/ has one sample of each.

Events
------
``classify(line)`` returns an :class:`Event` or ``None``. Kinds:

============  ===================================================================  =========
kind          lines                                                                rule
============  ===================================================================  =========
relay         smtpd/postscreen ``reject: RCPT ... Relay access denied`` (454/554)   relay
smtp_auth     smtpd ``warning: host[ip]: SASL <MECH> authentication failed: ...``  auth
              (3.7.8+ ``..., sasl_username=<u>`` and the older form ending with the
              base64 challenge, e.g. ``UGFzc3dvcmQ6``). NOT counted: ``Connection lost
              to authentication server`` (our side failed, not the client)
mail_auth     Dovecot ``imap-login``/``pop3-login``/``submission-login``/...        auth
              ``... (auth failed, N attempts in S secs): ... rip=<ip>`` (count = N),
              ``(tried to use disallowed plaintext auth)``, ``(proxy dest auth failed)``
auth_backend  Dovecot ``auth``/``auth-worker`` ``<passdb>(user,ip,...): Password     auth
              mismatch`` / ``unknown user`` (only logged with ``auth_verbose=yes``)
postscreen    ``PREGREET``, ``HANGUP``, ``COMMAND PIPELINING``, ``NON-SMTP COMMAND``,  postscreen
              ``BARE NEWLINE``, ``COMMAND TIME|COUNT|LENGTH LIMIT`` (``[ip]:port``)
protocol      smtpd ``improper command pipelining after X``, ``too many errors      protocol
              after X``, ``warning: non-SMTP command from``, ``lost connection after
              AUTH``, and ``SASL ... authentication failed: Invalid authentication
              mechanism`` (a mechanism we do not offer: probing, not a password)
reject        other smtpd/postscreen rejects that point at the client: unknown      reject
              recipient (directory harvest), HELO/sender domain not found or not
              fully qualified, ``Client host rejected``, DNSBL ``blocked using``,
              ``Data command rejected`` / ``Command rejected``
outbound      smtpd ``<qid>: client=..., sasl_method=..., sasl_username=<u>``:      outbound
              one message submitted by an authenticated user (``detail`` = qid)
outbound_rcpt (from :class:`Scanner` only) qmgr ``<qid>: from=<..>, size=..,         outbound
              nrcpt=N (queue active)`` for a qid seen in an ``outbound`` line: N
              recipients for that user
============  ===================================================================  =========

Decisions (what is deliberately NOT an event):

- ``lost connection after X`` for X other than AUTH, ``timeout after X``, ``disconnect ...
  auth=0/N``: scanners, TLS probes, monitoring and our own mailcheck produce the first two
  all day (fail2ban's aggressive mode counts them and bans monitoring); the disconnect summary
  repeats the SASL warning lines already counted. ``lost connection after AUTH`` IS counted
  (as ``protocol``): a brute-forcer that hangs up in the middle of AUTH leaves no failure line.
- Dovecot ``(no auth attempts ...)``, ``disconnected before auth was ready``, ``client didn't
  finish SASL auth``: idle or impatient clients, not attacks (fail2ban's dovecot aggressive
  mode counts them).
- postscreen ``DNSBL rank N``: a listing, not behaviour; the reject that follows is counted.
- rejects that do not point at the client: greylisting, temporary lookup failures, size, policy
  service answers, ``milter-reject`` (spam content: forwarders and lists would be banned).
- ``warning: hostname X does not resolve to address``: broken rDNS is common among legitimate
  senders.
- Addresses are taken ONLY from the fixed position the daemon writes them to (``host[ip]``
  right after ``from``/``warning:``, ``[ip]:port`` for postscreen, the LAST `` rip=`` of a
  Dovecot login line, the identifier of an auth line parsed from the right). Client-supplied
  text (HELO, addresses, user names) that imitates those fields cannot move the blame to
  another address. Dovecot's ``auth_verbose_passwords=plain`` puts the client's password after
  the identifier; a line whose tail is not one Dovecot writes is skipped rather than guessed.

Aggregation
-----------
:class:`Aggregator` counts events per (address, kind) over a sliding window per rule and emits,
when asked (``report(now)``, once per interval), one dict listing the addresses whose count in
the window reached the rule's threshold, plus the SASL users over the outbound limits. An
address is reported when it first crosses a threshold and again only after ``count`` further
events of that rule (a persistent attacker is re-reported at most once per interval, and
never once per line). Thresholds (pillar ``mailfleet:detect:thresholds``, merged over
:data:`DEFAULT_THRESHOLDS`; ``window`` in seconds):

- relay 3 in 600 s: nobody legitimate relays through a host that refuses them; fail2ban's
  postfix jail uses 5 tries in 10 min for all its lines, mailcow 10 in 10 min.
- auth 10 in 600 s (mailcow's default; fail2ban's is 5): phones retrying a stale password
  would hit 5. The ``auth`` count of an address is ``max(auth_backend, smtp_auth +
  mail_auth)`` so that one attempt logged twice (login process and, with ``auth_verbose``,
  auth worker) is counted once.
- postscreen 5 in 600 s, protocol 10 in 600 s (fail2ban's postfix-ddos lines), reject 20 in
  600 s (a legitimate server with a few typos never gets there; a harvest does).
- outbound 200 messages or 500 recipients per SASL user in 3600 s.

Bounds: at most ``max_ips`` addresses (default 500) and ``max_users`` users (100) per report;
the excess is NOT dropped but carried over, oldest first, into the next reports (the report
says how many wait: ``deferred``). That backlog holds at most ``max_backlog`` entries (50,000);
past it new offenders are counted in ``dropped``. At most ``max_tracked`` (100,000) addresses
are counted at once; events of further addresses are counted in ``untracked``. Loopback
addresses are never counted.

Tailing
-------
:class:`Tailer` reads complete lines from a saved offset, and survives rotation by rename
(it finishes the old file through its open descriptor, or through ``<path>.1`` after a
restart, then starts the new file at 0), truncation in place (size below the offset, or the
bytes before the offset changed: it restarts at 0) and a missing file. Its ``state`` is a
small JSON-able dict to persist between runs.
"""
import hashlib
import ipaddress
import json
import os
import re
from collections import OrderedDict, deque
from typing import NamedTuple, Optional

# salt://_utils: on sys.path for the loader, the detector's launcher and the tests
import mailfleet_address
import mailfleet_files

__virtualname__ = "mailfleet_maillog"


class Event(NamedTuple):
    kind: str  # see the module docstring
    ip: Optional[str]  # normalised client address (IPv4-mapped IPv6 as IPv4), None for none
    service: str  # "smtpd", "submission/smtpd", "postscreen", "imap-login", "auth-worker"...
    detail: str  # sub-kind: "relay_denied", "LOGIN", "PREGREET", "user_unknown", qid...
    user: Optional[str] = None  # SASL / login user name where the line has one
    count: int = 1  # attempts (Dovecot "N attempts") or recipients this line stands for


def __virtual__():
    return __virtualname__


# --- addresses ----------------------------------------------------------------------------

_IP_CACHE = {}
_IP_CACHE_MAX = 65536


def norm_ip(text):
    """Normalised address text, or None when ``text`` is not an IP address."""
    hit = _IP_CACHE.get(text)
    if hit is None:
        try:
            hit = mailfleet_address.address(text)
        except ValueError:
            hit = ""
        if len(_IP_CACHE) >= _IP_CACHE_MAX:
            _IP_CACHE.clear()
        _IP_CACHE[text] = hit
    return hit or None


# --- syslog header ------------------------------------------------------------------------

_HEADER = re.compile(
    r"(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"  # RFC 3339
    r"|[A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d)"  # Nov 25 19:48:13 / Nov  5 ...
    r" (\S+) "  # host
    r"([^\s\[\]:]+)(?:\[\d+\])?: ")  # tag[pid]:


def split_header(line):
    """(host, tag, message) of a syslog line, or None."""
    m = _HEADER.match(line)
    if m is None:
        return None
    return m.group(1), m.group(2), line[m.end():].rstrip("\r\n")


# --- Postfix ------------------------------------------------------------------------------

# "NOQUEUE: reject: RCPT from unknown[198.19.0.5]: 454 4.7.1 <...>: Relay access denied; ..."
# (smtpd: name[addr], with smtpd_client_port_logging name[addr]:port; postscreen: [addr]:port)
_REJECT = re.compile(r"(?:NOQUEUE|[0-9A-Za-z]+): reject: ([A-Z-]+) from ([^\s\[\]]*)\[([^\]\s]+)\](?::\d+)?: (.*)")
# "warning: unknown[198.19.0.5]: SASL LOGIN authentication failed: <reason>"
_SASL = re.compile(r"warning: ([^\s\[\]]*)\[([^\]\s]+)\](?::\d+)?: SASL ([A-Za-z0-9_-]+) authentication failed:(.*)")
_SMTPD_PROTO = re.compile(
    r"(improper command pipelining|too many errors|lost connection) after ([A-Za-z-]+)"
    r"(?: \(\d+ bytes\))? from ([^\s\[\]]*)\[([^\]\s]+)\](?::\d+)?")
_NON_SMTP = re.compile(r"warning: non-SMTP command from ([^\s\[\]]*)\[([^\]\s]+)\](?::\d+)?: ")
# "4Dxy: client=unknown[198.18.0.100], sasl_method=PLAIN, sasl_username=alice@example.test"
_CLIENT = re.compile(r"([0-9A-Za-z]+): client=([^\s\[\]]*)\[([^\]\s]+)\](?::\d+)?, sasl_method=[^,]*, sasl_username=(.*)")
_POSTSCREEN = re.compile(
    r"(?:(PREGREET) \d+ after \S+|(HANGUP) after \S+|"
    r"(COMMAND PIPELINING|NON-SMTP COMMAND|BARE NEWLINE|COMMAND (?:TIME|COUNT|LENGTH) LIMIT))"
    r" from \[([^\]\s]+)\]:\d+")

# Reject replies that say something about the client (cf. fail2ban's postfix "normal" mode,
# which ours covers): checked in order, first hit wins. Anything else is not an event.
_REJECT_REASONS = (
    ("Relay access denied", "relay_denied"),
    ("User unknown", "user_unknown"),
    ("Undeliverable address", "user_unknown"),
    ("Helo command rejected", "helo"),
    ("Sender address rejected: Domain not found", "sender_domain"),
    ("Sender address rejected: need fully-qualified", "sender_domain"),
    ("Sender address rejected: Malformed DNS server reply", "sender_domain"),
    ("Client host rejected", "client_host"),
    ("blocked using", "dnsbl"),
    ("Service unavailable", "dnsbl"),
    ("Data command rejected", "command"),
    ("Command rejected", "command"),
)
_USER_MAX = 100  # Postfix logs at most 100 characters of a SASL user name (%.100s)


def _client_user(text):
    user = text.strip()[:_USER_MAX]
    return user or None


def _reject(service, m):
    ip = norm_ip(m.group(3))
    if ip is None or m.group(1) == "CONNECT":  # postscreen "too many connections": our load
        return None
    reply = m.group(4)
    cut = reply.find("; from=<")
    if cut >= 0:
        reply = reply[:cut]
    for needle, detail in _REJECT_REASONS:
        if needle in reply:
            if detail == "relay_denied":
                return Event("relay", ip, service, detail)
            return Event("reject", ip, service, detail)
    return None


def _smtpd(service, msg):
    c0 = msg[:1]
    if c0 == "w":  # warning: ...
        if msg.startswith("warning: non-SMTP command from "):
            m = _NON_SMTP.match(msg)
            ip = m and norm_ip(m.group(2))
            return Event("protocol", ip, service, "non_smtp") if ip else None
        m = _SASL.match(msg)
        if m is None:
            return None
        ip = norm_ip(m.group(2))
        if ip is None:
            return None
        reason = m.group(4).lstrip()
        if reason.startswith("Connection lost to authentication server"):
            return None
        user = None
        at = reason.rfind("sasl_username=")
        if at >= 0:
            user = _client_user(reason[at + 14:])
            if user == "(unavailable)":
                user = None
        if reason.startswith("Invalid authentication mechanism"):
            return Event("protocol", ip, service, "auth_mechanism", user)
        return Event("smtp_auth", ip, service, m.group(3).upper(), user)
    if "reject: " in msg[:40]:
        m = _REJECT.match(msg)
        return _reject(service, m) if m else None
    if c0 in "itl":
        m = _SMTPD_PROTO.match(msg)
        if m is None:
            return None
        what, after = m.group(1), m.group(2)
        if what == "lost connection":
            if after != "AUTH":
                return None
            detail = "lost_after_auth"
        else:
            detail = "pipelining" if what.startswith("improper") else "too_many_errors"
        ip = norm_ip(m.group(4))
        return Event("protocol", ip, service, detail) if ip else None
    if "sasl_username=" in msg:
        m = _CLIENT.match(msg)
        if m is None:
            return None
        user = _client_user(m.group(4).split(", ", 1)[0])
        return Event("outbound", norm_ip(m.group(3)), service, m.group(1), user)
    return None


def _postscreen(service, msg):
    if msg.startswith("NOQUEUE: reject: "):
        m = _REJECT.match(msg)
        return _reject(service, m) if m else None
    m = _POSTSCREEN.match(msg)
    if m is None:
        return None
    ip = norm_ip(m.group(4))
    if ip is None:
        return None
    return Event("postscreen", ip, service, m.group(1) or m.group(2) or m.group(3))


# --- Dovecot ------------------------------------------------------------------------------

_DOVECOT_TAGS = frozenset(("dovecot", "dovecot-auth"))
# "imap-login: ", "auth-worker(3602): ", "auth: ", then maybe "Info: " and, for auth workers
# of 2.3.16+, "conn unix:auth-worker (pid=3601,uid=112): auth-worker<2>: "
_DOVECOT_PROC = re.compile(r"([a-z0-9-]+)(?:\(\d+\))?: (?:(?:Info|Warning|Error): )?")
_WORKER_CONN = re.compile(r"conn [^\s(]+ \([^)]*\): [a-z-]+<\d+>: ")
_ATTEMPTS = re.compile(r"\(auth failed, (\d+) attempts")
# What Dovecot may append after "Password mismatch" / "unknown user" (auth-request.c):
# the given password's SHA1 or text (auth_verbose_passwords) and " - trying the next ...".
_BACKEND_TAIL = re.compile(r"(?: \((?:SHA1 of )?given password: [^()]*\))?(?: - trying the next \w+)?")
_BACKEND_MSGS = ("): Password mismatch", "): unknown user")


def _dovecot(tag, msg):
    proc = tag
    if tag in _DOVECOT_TAGS:
        m = _DOVECOT_PROC.match(msg)
        if m is None:
            return None
        proc, msg = m.group(1), msg[m.end():]
    elif msg.startswith(("Info: ", "Warning: ", "Error: ")):
        msg = msg.split(": ", 1)[1]
    if proc.endswith("-login"):
        return _dovecot_login(proc, msg)
    if proc.startswith("auth"):
        m = _WORKER_CONN.match(msg)
        if m is not None:
            msg = msg[m.end():]
        return _dovecot_backend(proc, msg)
    return None


def _dovecot_login(service, msg):
    # "Disconnected (auth failed, 3 attempts in 12 secs): user=<u>, method=PLAIN, rip=IP,
    #  lip=IP, TLS, session=<..>"; the reason text before "(" varies between versions
    # ("Aborted login", "Disconnected: Inactivity", "Login aborted: Connection closed").
    at = msg.find("(auth failed, ")
    if at >= 0:
        m = _ATTEMPTS.match(msg, at)
        if m is None:
            return None
        count, detail = int(m.group(1)), "auth_failed"
    elif "(tried to use disallowed plaintext auth)" in msg or "(tried to use disabled plaintext auth)" in msg:
        count, detail = 1, "plaintext"
    elif "(proxy dest auth failed)" in msg:
        count, detail = 1, "proxy_auth_failed"
    else:
        return None
    # The user name comes first and is the client's: take the LAST " rip=" (the fields after
    # it, lip/TLS/session, are the server's).
    r = msg.rfind(" rip=")
    if r < 0:
        return None
    end = msg.find(",", r)
    ip = norm_ip(msg[r + 5:end if end >= 0 else None].strip())
    if ip is None or count <= 0:
        return None
    user = None
    u = msg.find("): user=<", at if at >= 0 else 0)
    if u >= 0:
        close = msg.rfind(">,", u, r)
        if close > u:
            user = msg[u + 9:close][:_USER_MAX] or None
    return Event("mail_auth", ip, service, detail, user, min(count, 1000))


def _dovecot_backend(service, msg):
    # "sql(alice@example.test,198.19.0.5,<sess>): Password mismatch" (auth-request.c
    # get_log_identifier: user[,ip][,master][,<session>]); the user (sanitised, <= 64 chars)
    # may hold commas and parentheses, so the identifier is read from the right.
    for text in _BACKEND_MSGS:
        at = msg.rfind(text)
        if at >= 0:
            break
    else:
        return None
    tail = msg[at + len(text):]
    if tail:
        if _BACKEND_TAIL.fullmatch(tail) is None:
            return None
        if " - trying the next" in tail:
            return None  # not the last passdb: the final verdict comes in its own line
        if tail.startswith(" (given password: ") and sum(msg.count(t) for t in _BACKEND_MSGS) != 1:
            return None  # a password in clear text that imitates the identifier: ambiguous
    open_ = msg.find("(")
    if open_ <= 0 or open_ > at:
        return None
    ident = msg[open_ + 1:at]
    if ident.endswith(">"):
        s = ident.rfind(",<")
        if s < 0:
            return None
        ident = ident[:s]
    if ident.endswith(",master"):
        ident = ident[:-7]
    c = ident.rfind(",")
    if c < 0:
        return None  # no address: a userdb lookup (LMTP delivery), not a login
    ip = norm_ip(ident[c + 1:])
    if ip is None:
        return None
    user = ident[:c][:_USER_MAX]
    detail = "password_mismatch" if text.endswith("mismatch") else "unknown_user"
    return Event("auth_backend", ip, service, detail, None if user in ("", "?") else user)


# --- classification -----------------------------------------------------------------------

def classify(line):
    """The :class:`Event` a mail.log line stands for, or None. ``line`` is a str."""
    m = _HEADER.match(line)
    if m is None:
        return None
    tag, msg = m.group(2), line[m.end():]
    if msg.endswith(("\n", "\r")):
        msg = msg.rstrip("\r\n")
    slash = tag.find("/")
    if slash > 0:
        service = tag[slash + 1:]
        process = service.rpartition("/")[2]
        if process == "smtpd":
            return _smtpd(service, msg)
        if process == "postscreen":
            return _postscreen(service, msg)
        return None
    if tag in _DOVECOT_TAGS or tag.endswith("-login") or tag.startswith("auth"):
        return _dovecot(tag, msg)
    return None


# Every line classify() turns into an event contains one of these (the corpus test checks it):
# the scanner looks for them in whole chunks with bytes.find (C speed, ~50-100 ms per needle
# per 150 MB here) and classifies only the lines they are on. Few needles, long ones where
# possible: " after " alone finds all the postscreen and smtpd protocol lines.
KEYWORDS = (
    b": reject:",  # relay, reject ("NOQUEUE: reject:", "<qid>: reject:")
    b"authentication failed",  # Postfix SASL
    b"auth failed",  # Dovecot login (auth failed, N attempts) / (proxy dest auth failed)
    b"plaintext auth)",  # Dovecot login (tried to use disallowed plaintext auth)
    b"Password mismatch", b"): unknown user",  # Dovecot auth
    b" after ",  # postscreen PREGREET/HANGUP/COMMAND .../BARE NEWLINE; smtpd improper command
                 # pipelining / too many errors / lost connection after AUTH
    b"non-SMTP command",  # smtpd
    b"sasl_username=",  # outbound (and the 3.7.8+ SASL failure lines)
)
_QMGR = b"/qmgr["


class Scanner:
    """Classifies chunks of complete lines (bytes) and correlates outbound volume.

    ``scan(chunk)`` returns the events of the chunk's lines in file order: exactly what
    :func:`classify` returns for each line, plus ``outbound_rcpt`` events that carry the
    recipient count of messages submitted by a SASL user: qmgr's ``<qid>: from=<..>,
    size=.., nrcpt=N (queue active)`` line, looked up by queue id after the ``client=`` line.
    A queue id whose qmgr line has not come after ``pending_bytes`` more bytes of log (the
    message was rejected by cleanup or a milter, or the queue is that far behind) is
    forgotten; at most ``max_pending`` are remembered.
    """

    def __init__(self, max_pending=20000, pending_bytes=32 << 20):
        self.bytes = 0  # bytes scanned so far (lines are not counted: that would cost ~5%)
        self.max_pending = max_pending
        self.pending_bytes = pending_bytes
        self._pending = OrderedDict()  # qmgr needle (bytes) -> (event, give up at self.bytes)

    def scan(self, chunk):
        if not chunk:
            return []
        starts = set()
        find, rfind = chunk.find, chunk.rfind
        for kw in KEYWORDS:
            p = find(kw)
            while p >= 0:
                starts.add(rfind(b"\n", 0, p) + 1)
                e = find(b"\n", p)
                if e < 0:
                    break
                p = find(kw, e)
        found = []  # (position, event)
        pending = self._pending
        if pending:  # messages of earlier chunks whose qmgr line had not come yet
            for needle in list(pending):
                ev, give_up = pending[needle]
                hit = self._qmgr(chunk, needle, 0, ev)
                if hit is not None:
                    del pending[needle]
                    found.append(hit)
                elif self.bytes + len(chunk) >= give_up:
                    del pending[needle]
        for s in sorted(starts):
            e = find(b"\n", s)
            raw = chunk[s:e] if e >= 0 else chunk[s:]
            ev = classify(raw.decode("utf-8", "replace"))
            if ev is None:
                continue
            found.append((s, ev))
            if ev.kind == "outbound":
                needle = b" " + ev.detail.encode() + b": from=<"
                hit = self._qmgr(chunk, needle, e if e >= 0 else len(chunk), ev)
                if hit is not None:
                    found.append(hit)
                else:
                    pending[needle] = (ev, self.bytes + len(chunk) + self.pending_bytes)
                    if len(pending) > self.max_pending:
                        pending.popitem(last=False)
        self.bytes += len(chunk)
        found.sort(key=_first)
        return [ev for _pos, ev in found]

    @staticmethod
    def _qmgr(chunk, needle, start, ev):
        """(position, outbound_rcpt event) of qmgr's "queue active" line for ev, or None."""
        find = chunk.find
        p = find(needle, start)
        while p >= 0:
            s = chunk.rfind(b"\n", 0, p) + 1
            e = find(b"\n", p)
            if e < 0:
                e = len(chunk)
            n = find(b", nrcpt=", p, e)
            if n >= 0 and chunk.endswith(b" (queue active)", n, e) and find(_QMGR, s, p) >= 0:
                digits = chunk[n + 8:e - 15]
                if digits.isdigit():
                    return s, Event("outbound_rcpt", ev.ip, ev.service, ev.detail, ev.user, int(digits))
            p = find(needle, e)
        return None


def _first(pair):
    return pair[0]


def scan_file(path, chunk_size=8 << 20):
    """Events of a whole file (helper for tests and the bench): (events, bytes scanned)."""
    scanner = Scanner()
    events = []
    rest = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk_size)
            if not block:
                break
            block = rest + block
            cut = block.rfind(b"\n") + 1
            rest = block[cut:]
            events.extend(scanner.scan(block[:cut]))
    if rest:
        events.extend(scanner.scan(rest))
    return events, scanner.bytes


# --- aggregation --------------------------------------------------------------------------

DEFAULT_THRESHOLDS = {
    "relay": {"count": 3, "window": 600},
    "auth": {"count": 10, "window": 600},
    "postscreen": {"count": 5, "window": 600},
    "protocol": {"count": 10, "window": 600},
    "reject": {"count": 20, "window": 600},
    "outbound": {"messages": 200, "recipients": 500, "window": 3600},
}
RULE_OF_KIND = {
    "relay": "relay", "smtp_auth": "auth", "mail_auth": "auth", "auth_backend": "auth",
    "postscreen": "postscreen", "protocol": "protocol", "reject": "reject",
}
_AUTH_FRONT = ("smtp_auth", "mail_auth")
_LIST_MAX = 5  # users / services listed per offender


def merge_thresholds(overrides=None):
    """DEFAULT_THRESHOLDS with ``overrides`` (pillar) merged in, validated: positive ints."""
    merged = {rule: dict(values) for rule, values in DEFAULT_THRESHOLDS.items()}
    for rule, values in (overrides or {}).items():
        if rule not in merged:
            raise ValueError(f"unknown detection rule {rule!r} (known: {', '.join(sorted(merged))})")
        if not isinstance(values, dict):
            raise ValueError(f"thresholds for {rule!r} must be a mapping")
        for key, value in values.items():
            if key not in merged[rule]:
                raise ValueError(f"unknown threshold {rule}:{key}")
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"threshold {rule}:{key} must be a positive integer, not {value!r}")
            merged[rule][key] = value
    return merged


def _rule_count(rule, kinds):
    if rule == "auth":
        return max(kinds.get("auth_backend", 0), kinds.get("smtp_auth", 0) + kinds.get("mail_auth", 0))
    return sum(n for kind, n in kinds.items() if RULE_OF_KIND.get(kind) == rule)


class Aggregator:
    """Counts events per address and kind; ``report(now)`` closes an interval.

    Feed it with ``add(event)`` / ``add_all(events)``; call ``report(now)`` once per interval
    (``now``: epoch seconds). The result is None when there is nothing to say, else one dict::

        {"interval": [start, end], "events": {kind: n},          # this interval
         "offenders": [{"ip", "rules": {rule: count in window},
                        "kinds": {kind: count in window}, "services": [...], "users": [...]}],
         "outbound": [{"user", "messages", "recipients", "window", "ips": [...]}],
         "deferred": n, "dropped": n, "untracked": n}
    """

    def __init__(self, thresholds=None, *, max_ips=500, max_users=100, max_tracked=100_000,
                 max_backlog=50_000, start=None):
        self.rules = merge_thresholds(thresholds)
        self.max_ips, self.max_users = max_ips, max_users
        self.max_tracked, self.max_backlog = max_tracked, max_backlog
        self.start = start
        self._cur = {}  # ip -> {kind: n} this interval
        self._cur_meta = {}  # ip -> (services set, users set)
        self._cur_out = {}  # user -> [messages, recipients, ips set]
        self._cur_events = {}
        self._hist = {rule: deque() for rule in self.rules}  # (t, {key: {kind|"m"/"r": n}})
        self._totals = {rule: {} for rule in self.rules}  # key -> {kind: n} in the window
        self._since = {}  # (rule, key) -> events since last report; present = reported once
        self._backlog = OrderedDict()  # ("ip", ip) / ("user", u) -> entry waiting for room
        self.untracked = self.dropped = 0

    # feeding ----------------------------------------------------------------------------
    def add(self, ev):
        self.add_all((ev,))

    def add_all(self, events):
        counts, cur, meta, cur_out = self._cur_events, self._cur, self._cur_meta, self._cur_out
        rules, max_tracked = RULE_OF_KIND, self.max_tracked
        for ev in events:
            kind, ip, _service, _detail, user, n = ev
            counts[kind] = counts.get(kind, 0) + n
            if kind == "outbound" or kind == "outbound_rcpt":
                if not user:
                    continue
                slot = cur_out.get(user)
                if slot is None:
                    if len(cur_out) >= max_tracked:
                        self.untracked += n
                        continue
                    slot = cur_out[user] = [0, 0, set()]
                slot[0 if kind == "outbound" else 1] += n
                if ip and len(slot[2]) < _LIST_MAX:
                    slot[2].add(ip)
                continue
            kinds = cur.get(ip)
            if kinds is None:
                if ip is None or kind not in rules or _loopback(ip):
                    continue
                if len(cur) >= max_tracked:
                    self.untracked += n
                    continue
                kinds = cur[ip] = {}
                meta[ip] = (set(), set())
            elif kind not in rules:
                continue
            kinds[kind] = kinds.get(kind, 0) + n
            services, users = meta[ip]
            if len(services) < _LIST_MAX:
                services.add(ev.service)
            if user and len(users) < _LIST_MAX:
                users.add(user)

    # reporting --------------------------------------------------------------------------
    def report(self, now):
        start = self.start if self.start is not None else now
        self.start = now
        cur, meta, cur_out = self._cur, self._cur_meta, self._cur_out
        events = self._cur_events
        self._cur, self._cur_meta, self._cur_out, self._cur_events = {}, {}, {}, {}

        # 1. push this interval into each rule's window, expire what fell out of it
        per_rule = {rule: {} for rule in self.rules}
        for ip, kinds in cur.items():
            for kind, n in kinds.items():
                per_rule[RULE_OF_KIND[kind]].setdefault(ip, {})[kind] = n
        per_rule["outbound"] = {u: {k: n for k, n in (("m", s[0]), ("r", s[1])) if n}
                                for u, s in cur_out.items()}
        for rule, bucket in per_rule.items():
            totals, hist = self._totals[rule], self._hist[rule]
            if bucket:
                hist.append((now, bucket))
                for key, kinds in bucket.items():
                    acc = totals.setdefault(key, {})
                    for kind, n in kinds.items():
                        acc[kind] = acc.get(kind, 0) + n
            horizon = now - self.rules[rule]["window"]
            while hist and hist[0][0] <= horizon:
                _t, old = hist.popleft()
                for key, kinds in old.items():
                    acc = totals[key]
                    for kind, n in kinds.items():
                        left = acc.get(kind, 0) - n
                        if left > 0:
                            acc[kind] = left
                        else:
                            acc.pop(kind, None)
                    if not acc:
                        del totals[key]
                        if rule == "outbound":
                            self._since.pop(("outbound_m", key), None)
                            self._since.pop(("outbound_r", key), None)
                        else:
                            self._since.pop((rule, key), None)

        # 2. who crossed a threshold in this interval
        offenders = {}
        for rule, bucket in per_rule.items():
            if rule == "outbound" or not bucket:
                continue
            limit, totals = self.rules[rule]["count"], self._totals[rule]
            for ip, kinds in bucket.items():
                if self._crossed((rule, ip), _rule_count(rule, kinds), _rule_count(rule, totals[ip]), limit):
                    entry = offenders.get(ip)
                    if entry is None:
                        services, users = meta[ip]
                        entry = offenders[ip] = {"ip": ip, "rules": {}, "kinds": {},
                                                 "services": sorted(services), "users": sorted(users)}
                    entry["rules"][rule] = _rule_count(rule, totals[ip])
                    entry["kinds"].update(totals[ip])
        heavy = {}
        out_rule = self.rules["outbound"]
        for user, counts in per_rule["outbound"].items():
            m_tot = self._totals["outbound"][user]
            crossed_m = self._crossed(("outbound_m", user), counts.get("m", 0), m_tot.get("m", 0),
                                      out_rule["messages"])
            crossed_r = self._crossed(("outbound_r", user), counts.get("r", 0), m_tot.get("r", 0),
                                      out_rule["recipients"])
            if crossed_m or crossed_r:
                heavy[user] = {"user": user, "messages": m_tot.get("m", 0), "recipients": m_tot.get("r", 0),
                               "window": out_rule["window"], "ips": sorted(cur_out[user][2])}

        # 3. bounded report: backlog first (oldest first), then this interval's, by count
        new_ips = sorted(offenders.values(), key=lambda e: (-sum(e["rules"].values()), e["ip"]))
        new_users = sorted(heavy.values(), key=lambda e: (-e["recipients"], -e["messages"], e["user"]))
        out_ips, out_users = [], []
        for key in list(self._backlog):
            kind_, name = key
            target, cap = (out_ips, self.max_ips) if kind_ == "ip" else (out_users, self.max_users)
            if len(target) < cap:
                target.append(self._backlog.pop(key))
        for entries, target, cap, tag in ((new_ips, out_ips, self.max_ips, "ip"),
                                          (new_users, out_users, self.max_users, "user")):
            for entry in entries:
                key = (tag, entry["ip" if tag == "ip" else "user"])
                if key in self._backlog:
                    self._backlog[key] = entry  # fresher counts, same place in the queue
                elif len(target) < cap:
                    target.append(entry)
                elif len(self._backlog) < self.max_backlog:
                    self._backlog[key] = entry
                else:
                    self.dropped += 1
        if not (out_ips or out_users or self._backlog or self.untracked or self.dropped):
            return None
        report = {"interval": [start, now], "events": events, "offenders": out_ips,
                  "outbound": out_users, "deferred": len(self._backlog),
                  "dropped": self.dropped, "untracked": self.untracked}
        self.untracked = self.dropped = 0
        return report

    def forget_users(self, users):
        """Drop what the windows hold of ``users`` (the postmaster released them: counting
        their mail from before the release again would hold them again). Returns how many
        were known."""
        users = set(users)
        known = 0
        for user in users:
            if self._totals["outbound"].pop(user, None) is not None:
                known += 1
            self._cur_out.pop(user, None)
            self._since.pop(("outbound_m", user), None)
            self._since.pop(("outbound_r", user), None)
            self._backlog.pop(("user", user), None)
        for _t, bucket in self._hist["outbound"]:
            for user in users & bucket.keys():
                del bucket[user]
        return known

    def _crossed(self, key, added, total, limit):
        """First time: window total reached the limit. Later: `limit` more since the last report."""
        if not added:
            return False
        since = self._since.get(key)
        if since is None:
            if total >= limit:
                self._since[key] = 0
                return True
            return False
        since += added
        if since >= limit:
            self._since[key] = 0
            return True
        self._since[key] = since
        return False


_LOOPBACK_CACHE = {}


def _loopback(ip):
    hit = _LOOPBACK_CACHE.get(ip)
    if hit is None:
        hit = ipaddress.ip_address(ip).is_loopback
        if len(_LOOPBACK_CACHE) >= _IP_CACHE_MAX:
            _LOOPBACK_CACHE.clear()
        _LOOPBACK_CACHE[ip] = hit
    return hit


# --- tailing ------------------------------------------------------------------------------

_SIG_LEN = 64  # bytes before the offset remembered to notice a file rewritten in place


class _File:
    """One open log file: descriptor, identity, read offset and the signature before it."""

    def __init__(self, path, offset=0, sig=""):
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        st = os.fstat(self.fd)
        self.id = (st.st_dev, st.st_ino)
        self.offset, self.sig = offset, sig
        self.truncated = False
        self.check()

    def size(self):
        return os.fstat(self.fd).st_size

    def signature(self, offset):
        lo = max(0, offset - _SIG_LEN)
        return hashlib.blake2b(os.pread(self.fd, offset - lo, lo), digest_size=12).hexdigest()

    def check(self):
        """Back to 0 when the file shrank below the offset or was rewritten under it."""
        if self.offset and (self.offset > self.size() or self.signature(self.offset) != self.sig):
            self.offset, self.sig, self.truncated = 0, "", True

    def seek_end(self):
        """Start after the last complete line (never in the middle of one)."""
        size = self.size()
        lo = max(0, size - 65536)
        tail = os.pread(self.fd, size - lo, lo)
        nl = tail.rfind(b"\n")
        self.offset = lo + nl + 1 if nl >= 0 else lo
        self.sig = self.signature(self.offset)

    def at_eof(self):
        return self.offset >= self.size()

    def read(self, budget, final=False):
        """Complete lines from the offset, at most ``budget`` bytes. ``final``: the file will not
        grow any more, so an unterminated last line is returned too."""
        self.check()
        size = self.size()
        want = min(size - self.offset, budget)
        if want <= 0:
            return b""
        data = os.pread(self.fd, want, self.offset)
        if not (final and len(data) == size - self.offset):
            cut = data.rfind(b"\n") + 1
            if cut:
                data = data[:cut]
            elif len(data) < budget:
                return b""  # a line still being written: wait for its newline
            # else: one line longer than the budget, handed over in pieces
        self.offset += len(data)
        self.sig = self.signature(self.offset)
        return data

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Tailer:
    """Follows a log file from a saved offset, across rotation and truncation.

    ``read()`` returns the complete lines (bytes, each ending with ``\\n``) written since the
    last call, at most ``max_read`` bytes of them (the rest comes with the next call).

    - Rotation by rename (logrotate ``create``, Debian's rsyslog default): the path names a new
      file. The old one stays open and is drained first; the writer keeps writing to it until
      it reopens its log (rsyslog's HUP in postrotate), so it is closed only once the new
      file has data. Lines come out in the order they were written.
    - Truncation in place (``copytruncate``) or a rewrite: the file is shorter than the offset,
      or the bytes before the offset are not the ones read: restart at 0.
    - The file missing: keep reading the open one; the new file is read from 0 when it appears.
    - A restart: ``Tailer(path, state)`` with the ``state`` of the previous instance resumes at
      its offset; if the file was rotated meanwhile, the rest of the old file is read from
      ``<path>.1`` (``rotated``: names to look in) before the new one.

    Without a state it starts at the end of the file as it is when the Tailer is made, after
    its last complete line (``from_start=True``: at the beginning); a file that does not exist
    yet is read from its beginning when it appears.
    ``notes`` lists what happened during the last ``read()`` ("rotated", "truncated", ...).
    """

    def __init__(self, path, state=None, *, from_start=False, max_read=16 << 20, rotated=None):
        self.path = os.fspath(path)
        self.max_read = max_read
        self.rotated = tuple(rotated) if rotated is not None else (self.path + ".1",)
        self.notes = []
        self._cur = None  # the file at self.path
        self._old = None  # a rotated-away file still being drained
        self._saved = dict(state) if state else None  # until the file is open, then on close
        self._from_start = from_start
        self._fresh = True  # notes of the opening are kept for the first read()
        self._start()

    @property
    def state(self):
        """{"dev", "ino", "offset", "sig"} of the file at ``path`` (JSON-able), or None."""
        f = self._cur
        if f is None:
            return dict(self._saved) if self._saved else None
        return {"dev": f.id[0], "ino": f.id[1], "offset": f.offset, "sig": f.sig}

    def close(self):
        self._saved = self.state
        for f in (self._old, self._cur):
            if f is not None:
                f.close()
        self._old = self._cur = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _stat(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _open(self, path, offset=0, sig=""):
        try:
            f = _File(path, offset, sig)
        except FileNotFoundError:
            return None
        if f.truncated:
            self.notes.append(("truncated", path))
            f.truncated = False
        return f

    def _start(self):
        saved, self._saved = self._saved, None
        here = self._stat()
        if saved:
            key = (saved.get("dev"), saved.get("ino"))
            offset, sig = int(saved.get("offset", 0)), saved.get("sig", "")
            if here == key:
                self._cur = self._open(self.path, offset, sig)
                return
            for cand in self.rotated:  # rotated while we were away
                try:
                    st = os.stat(cand)
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) == key:
                    self._old = self._open(cand, offset, sig)
                    self.notes.append(("resumed-rotated", cand))
                    break
            else:
                self.notes.append(("lost-rotated", self.path))
            self._cur = self._open(self.path)
            return
        self._cur = self._open(self.path)
        if self._cur is not None and not self._from_start:
            self._cur.seek_end()

    def read(self):
        if self._fresh:
            self._fresh = False
        else:
            self.notes = []
        out = []
        here = self._stat()
        if here is None:
            if self._cur is not None:
                self.notes.append(("missing", self.path))
        elif self._cur is None or self._cur.id != here:
            if self._cur is not None:
                self.notes.append(("rotated", self.path))
                if self._old is not None:  # rotated twice before the first was drained
                    out.append(self._old.read(self.max_read, final=True))
                    self._old.close()
                self._old = self._cur
            self._cur = self._open(self.path)
        budget = self.max_read - sum(map(len, out))
        if self._old is not None:
            data = self._old.read(budget)
            out.append(data)
            budget -= len(data)
            if budget <= 0:
                return b"".join(out)
            # No complete line left in the old file. Its writer has moved on once the new file
            # has data: then take an unterminated last line, if any, and close it.
            if self._cur is None or self._cur.size() == 0:
                return b"".join(out)
            tail = self._old.read(budget, final=True)
            out.append(tail)
            budget -= len(tail)
            self._old.close()
            self._old = None
        if self._cur is not None and budget > 0:
            out.append(self._cur.read(budget))
            if self._cur.truncated:
                self.notes.append(("truncated", self.path))
                self._cur.truncated = False
        return b"".join(out)


def load_state(path):
    """A Tailer state saved by :func:`save_state`, or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def save_state(path, state):
    """Write a Tailer state atomically (write to a temporary file, then rename)."""
    mailfleet_files.write_json(path, state, mode=0o600, sort_keys=False)
