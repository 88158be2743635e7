"""
The difference between the rows a pillar declares and the rows the database holds, with the
ownership rules: a managed row gone from the pillar is deactivated, never deleted, unless its
domain's ``retention: {purge_after_days: N}`` has passed (then deleted and, for a mailbox, its
maildir archived); rows mailfleet never managed are left alone unless ``mailfleet:exclusive``.
One job of the virtual-user sync; pure.
"""
import datetime
import logging

from mailfleet_vusers_rows import (  # salt://_utils
    MANAGED_COLS,
    PROTECTED,
    SUMMARY_LIMIT,
    TABLES,
)

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_vusers_diff"


def __virtual__():
    return __virtualname__


def _cmp_form(table, managed):
    """Comparable form of a managed-column tuple (DB and pillar alike)."""
    if table == "alias":
        goto, dom, active = managed
        return (frozenset(t.strip().lower() for t in (goto or "").split(",") if t.strip()), (dom or "").lower(), int(active))
    if table == "mailbox":
        pw, name, quota, local, dom, active = managed
        return (pw or "", name or "", int(quota or 0), (local or "").lower(), (dom or "").lower(), int(active))
    if table == "domain":
        desc, maxq, active = managed
        return (desc or "", int(maxq or 0), int(active))
    target, active = managed
    return ((target or "").lower(), int(active))


def _row_domain(table, key, managed):
    if table == "domain":
        return key
    if table == "alias_domain":
        return (managed[0] or "").lower()
    return (managed[-2] or "").lower()


class Diff:
    """What a sync changes. Keys are lower-case; see summarize() for a readable form."""

    def __init__(self, now):
        self.now = now
        self.insert = {t: [] for t in TABLES}  # [(key, managed, insert_only)]
        self.update = {t: [] for t in TABLES}  # [(key, managed, insert_only, [changed columns])]
        self.deactivate = {t: [] for t in TABLES}  # [key]
        self.purge = {t: [] for t in TABLES}  # [key]
        self.adopt = {t: [] for t in TABLES}  # [key] existing rows mailfleet takes over
        self.archive = []  # [(username, maildir relative, archive relative)]
        self.managed_upsert = []  # [(tbl, item, domain, deactivated, purge_after_days)]
        self.managed_delete = []  # [(tbl, item)]
        self.notes = []  # things worth saying (purges held back, ...)

    @property
    def empty(self):
        return not (
            any(self.insert.values()) or any(self.update.values()) or any(self.deactivate.values())
            or any(self.purge.values()) or self.managed_upsert or self.managed_delete
        )

    def counts(self):
        out = {}
        for kind in ("insert", "update", "deactivate", "purge", "adopt"):
            for t in TABLES:
                n = len(getattr(self, kind)[t])
                if n:
                    out.setdefault(t, {})[kind] = n
        if self.archive:
            out["maildir"] = {"archive": len(self.archive)}
        return out


def _archive_rel(dom, local, now):
    return f".archive/{dom}/{local}-{now.strftime('%Y%m%dT%H%M%SZ')}"


def _safe_rel(path):
    if not path or path.startswith("/") or "\\" in path:
        return False
    parts = [p for p in path.split("/") if p]
    return bool(parts) and all(p not in (".", "..") for p in parts) and not parts[0].startswith(".")


def compute_diff(desired, current, managed, now, exclusive=False, retention=None):
    """Diff the desired rows against the database.

    desired:  ``{table: {key: (managed, insert_only)}}`` from desired_rows()
    current:  same shape, read from the database (keys lower-cased)
    managed:  ``{(table, key): (domain, deactivated, purge_after_days)}``
    now:      the database's NOW() (datetime)
    exclusive: rows never managed may be deactivated too
    retention: ``{domain: purge_after_days or None}`` from the pillar
    """
    retention = retention or {}
    diff = Diff(now)
    for t in TABLES:
        want, have = desired[t], current[t]
        for key, (m, ins) in want.items():
            cur = have.get(key)
            if cur is None:
                diff.insert[t].append((key, m, ins))
            elif cur[0] != m:  # equal tuples: the common case, no normalising needed
                a, b = _cmp_form(t, cur[0]), _cmp_form(t, m)
                if a != b:
                    changed = [c for c, x, y in zip(MANAGED_COLS[t], a, b) if x != y]
                    diff.update[t].append((key, m, ins, changed))
            dom = _row_domain(t, key, m)
            entry = (dom, None, retention.get(dom))
            old = managed.get((t, key))
            if old is None:
                if cur is not None:
                    diff.adopt[t].append(key)
                diff.managed_upsert.append((t, key) + entry)
            elif old != entry:
                diff.managed_upsert.append((t, key) + entry)

        for key, (m, ins) in have.items():
            if key in want or (t, key) in PROTECTED:
                continue
            old = managed.get((t, key))
            if old is None and not exclusive:
                continue
            dom = old[0] if old is not None else _row_domain(t, key, m)
            days = retention.get(dom, old[2] if old is not None else None)
            deactivated = old[1] if old is not None else None
            active = int(m[-1])
            if active:
                diff.deactivate[t].append(key)
                deactivated = now
            elif deactivated is None:
                deactivated = now  # inactive, but not by us: the retention clock starts now
            elif days is not None and now - deactivated >= datetime.timedelta(days=days):
                diff.purge[t].append(key)
                continue
            if old != (dom, deactivated, days):
                diff.managed_upsert.append((t, key, dom, deactivated, days))

    for (t, key) in managed:
        if key not in current[t] and key not in desired[t]:
            diff.managed_delete.append((t, key))

    # a purged mailbox's maildir is archived, never deleted
    keep = []
    for key in diff.purge["mailbox"]:
        m, ins = current["mailbox"][key]
        local, dom, maildir = m[3] or key.partition("@")[0], m[4] or key.partition("@")[2], ins[0]
        if not _safe_rel(maildir or ""):
            diff.notes.append(f"mailbox {key}: maildir {maildir!r} is not a plain relative path; not purged")
            continue
        diff.archive.append((key, maildir, _archive_rel(dom.lower(), local.lower(), now)))
        keep.append(key)
    diff.purge["mailbox"] = keep

    # a domain is purged only when nothing that stays refers to it
    if diff.purge["domain"]:
        gone = {t: set(diff.purge[t]) for t in TABLES}
        used = set()
        for t in ("mailbox", "alias", "alias_domain"):
            for key, (m, ins) in current[t].items():
                if key not in gone[t]:
                    used.add(_row_domain(t, key, m))
        for m, _ in desired["alias_domain"].values():
            used.add(m[0])
        held = [d for d in diff.purge["domain"] if d in used]
        for d in held:
            diff.notes.append(f"domain {d}: rows still refer to it; not purged")
        diff.purge["domain"] = [d for d in diff.purge["domain"] if d not in used]

    for t in TABLES:
        for key in diff.purge[t]:
            diff.managed_delete.append((t, key))
    return diff


def summarize(diff, limit=SUMMARY_LIMIT, full=False):
    """A readable summary: per table and kind, the count and the first ``limit`` keys
    (``items``: all of them, with ``full``). Updates name the changed columns, never
    their values (a password hash is a secret)."""
    out = {}

    def put(table, kind, items, render=lambda x: x):
        if items:
            shown = items if full else items[:limit]
            out.setdefault(table, {})[kind] = {"count": len(items), "items" if full else "first": [render(i) for i in shown]}

    for t in TABLES:
        put(t, "insert", diff.insert[t], lambda i: i[0])
        put(t, "update", diff.update[t], lambda i: f"{i[0]} ({', '.join(i[3])})")
        put(t, "deactivate", diff.deactivate[t])
        put(t, "purge", diff.purge[t])
        put(t, "adopt", diff.adopt[t])
    put("maildir", "archive", diff.archive, lambda i: f"{i[1]} -> {i[2]}")
    if diff.notes:
        out["notes"] = diff.notes if full else diff.notes[:limit]
    return out


def describe(diff):
    """One line: counts of what the diff does."""
    parts = []
    for kind, label in (("insert", "insert"), ("update", "update"), ("deactivate", "deactivation"), ("purge", "purge")):
        n = sum(len(v) for v in getattr(diff, kind).values())
        if n:
            per = ", ".join(f"{t} {len(v)}" for t, v in getattr(diff, kind).items() if v)
            parts.append(f"{n} {label}{'s' if n != 1 else ''} ({per})")
    if diff.archive:
        parts.append(f"{len(diff.archive)} maildir archive{'s' if len(diff.archive) != 1 else ''}")
    n = sum(len(v) for v in diff.adopt.values())
    if n:
        parts.append(f"{n} existing row{'s' if n != 1 else ''} adopted")
    if not parts and (diff.managed_upsert or diff.managed_delete):
        parts.append(f"{len(diff.managed_upsert) + len(diff.managed_delete)} ownership record updates")
    return "; ".join(parts) if parts else "no changes"
