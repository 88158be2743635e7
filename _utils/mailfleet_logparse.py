"""
The mail.log parser, one of the detector's three pieces (this parser,
``mailfleet_logcount`` that turns its events into one bounded report per interval, and
``mailfleet_logtail`` that follows the file across rotation): Postfix and Dovecot lines of
``/var/log/mail.log`` in, :class:`Event` tuples out. Pure Python, no Salt imports: the
mailfleet_watch detector on each minion, the ``mailfleet_maillog`` execution module and the
tests import it plainly (Salt puts the utils directories on ``sys.path``).

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
              mismatch`` / ``unknown user`` (2.3), ``auth-worker(user,ip)<pid>:
              request [n]: <passdb>: Password mismatch`` (2.4); only logged with
              ``auth_verbose=yes``
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
"""
import functools
import re
from collections import OrderedDict
from typing import NamedTuple, Optional

import mailfleet_address  # salt://_utils

__virtualname__ = "mailfleet_logparse"


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

# Log lines repeat the same few thousand addresses: remember their normal form (bounded,
# the detector runs for months). The one memo mechanism of the parser: functools' LRU.
@functools.lru_cache(maxsize=65536)
def norm_ip(text):
    """Normalised address text, or None when ``text`` is not an IP address."""
    try:
        return mailfleet_address.address(text)
    except ValueError:
        return None


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


# Dovecot 2.4 puts the request's identifier on the process name instead (auth-request.c
# get_log_prefix; taken from Debian 13's 2.4.1): "auth-worker(bob@example-b.test,198.18.0.100)
# <3583><v4PHFxdiUqTGEgBk>: request [1]: sql: Password mismatch", the auth process likewise
# as "auth(user,ip,sasl:plain)<session>: Info: sql: ...".
# The identifier is taken greedily (read from the right, as for 2.3): a user name that
# imitates the rest of the line cannot move which address the failure is counted for.
_DOVECOT24_AUTH = re.compile(r"(auth(?:-worker)?)\((.+)\)(?:<\d+>)?(?:<[^<>\s]*>)?: "
                             r"(?:request \[\d+\]: )?(?:(?:Info|Warning|Error): )?([a-z0-9_-]+): ")
_BACKEND24_MSGS = ("Password mismatch", "unknown user")


def _dovecot24_backend(msg):
    m = _DOVECOT24_AUTH.match(msg)
    if m is None:
        return None
    service, ident, tail = m.group(1), m.group(2), msg[m.end():]
    for text in _BACKEND24_MSGS:
        if tail.startswith(text):
            break
    else:
        return None
    if not _backend_tail_ok(tail[len(text):]):
        return None
    return _backend_event(service, ident, text == "Password mismatch")


def _dovecot(tag, msg):
    proc = tag
    if tag in _DOVECOT_TAGS:
        m = _DOVECOT_PROC.match(msg)
        if m is None:
            return _dovecot24_backend(msg) if msg.startswith("auth") else None
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
    # "sql(alice@example.test,198.19.0.5,<sess>): Password mismatch" (2.3's auth-request.c
    # get_log_identifier); the user may hold commas and parentheses: read from the right.
    for text in _BACKEND_MSGS:
        at = msg.rfind(text)
        if at >= 0:
            break
    else:
        return None
    tail = msg[at + len(text):]
    if not _backend_tail_ok(tail):
        return None
    if tail.startswith(" (given password: ") and sum(msg.count(t) for t in _BACKEND_MSGS) != 1:
        return None  # a password in clear text that imitates the identifier: ambiguous
    open_ = msg.find("(")
    if open_ <= 0 or open_ > at:
        return None
    return _backend_event(service, msg[open_ + 1:at], text.endswith("mismatch"))


def _backend_tail_ok(tail):
    """What may follow "Password mismatch" / "unknown user" on the final verdict's line
    (not " - trying the next passdb": that passdb was not the last)."""
    return not tail or (_BACKEND_TAIL.fullmatch(tail) is not None and " - trying the next" not in tail)


def _backend_event(service, ident, mismatch):
    """The event of an auth identifier ``user[,ip][,sasl:mech][,master][,<session>]``
    (2.3 and 2.4 alike), read from the right; None without an address (a userdb lookup
    for LMTP delivery, not a login)."""
    parts = ident.split(",")
    while len(parts) > 1 and (parts[-1] == "master" or parts[-1].startswith("sasl:")
                              or (parts[-1].startswith("<") and parts[-1].endswith(">"))):
        parts.pop()
    if len(parts) < 2:
        return None
    ip = norm_ip(parts[-1])
    if ip is None:
        return None
    user = ",".join(parts[:-1])[:_USER_MAX]
    return Event("auth_backend", ip, service, "password_mismatch" if mismatch else "unknown_user",
                 None if user in ("", "?") else user)


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
    b"Password mismatch", b": unknown user",  # Dovecot auth (2.3 "sql(...): ", 2.4 "sql: ")
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
