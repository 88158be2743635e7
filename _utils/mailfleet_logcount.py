"""
The detector's counter: events of ``mailfleet_logparse`` in, ONE bounded report per
interval out. Pure Python, imported plainly (Salt puts the utils directories on ``sys.path``).

Aggregation
-----------
:class:`Aggregator` counts events per (address, kind) over a sliding window per rule and emits,
when asked (``report(now)``, once per interval), one dict listing the addresses whose count in
the window reached the rule's threshold, plus the SASL users over the outbound limits. An
address is reported when it first crosses a threshold and again only after ``count`` further
events of that rule (a persistent attacker is re-reported at most once per interval, and
never once per line). Thresholds (pillar ``mailfleet:defense:thresholds``, merged over
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
"""
import functools
import ipaddress
from collections import OrderedDict, deque

__virtualname__ = "mailfleet_logcount"


def __virtual__():
    return __virtualname__


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


def rule_count(rule, kinds):
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
                if self._crossed((rule, ip), rule_count(rule, kinds), rule_count(rule, totals[ip]), limit):
                    entry = offenders.get(ip)
                    if entry is None:
                        services, users = meta[ip]
                        entry = offenders[ip] = {"ip": ip, "rules": {}, "kinds": {},
                                                 "services": sorted(services), "users": sorted(users)}
                    entry["rules"][rule] = rule_count(rule, totals[ip])
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


@functools.lru_cache(maxsize=65536)  # bounded, like mailfleet_logparse.norm_ip's
def _loopback(ip):
    return ipaddress.ip_address(ip).is_loopback
