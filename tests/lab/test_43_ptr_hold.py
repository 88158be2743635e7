"""The article's rule "STOP until the PTR matches", for real: mail01's PTR is changed in the
lab reverse zone (TSIG update, what an ISP's panel does), verification reports it, and with
mailfleet:deliverability:hold_outbound_on_bad_ptr on (given as command-line pillar, so
nothing is left behind) mail01's mail to example-b.test stays deferred (no bounce, no DSN)
until the PTR is fixed and the state applied again; then it is delivered to mail02.

The PTR and the switch are restored in `finally` blocks: later tests share the lab."""
import json
import time

import pytest

from conftest import LAB_MAIL_DOMAINS, salt_run, state_failures
from mailtools import log_lines, tag, wait
from test_40_deliverability import lookup, nsupdate

HOST = "mail01.lab.test"
IP = "198.18.0.11"
REV_ZONE = "0.18.198.in-addr.arpa"
REV = "11.0.18.198.in-addr.arpa."
WRONG = "mail99.lab.test."
HOLD = {"mailfleet": {"deliverability": {"hold_outbound_on_bad_ptr": True}}}
QUEUE_ID_TIMEOUT = 60


def apply_hold(lab, pillar=None):
    args = [HOST, "state.apply", "mail.outbound_hold"]
    if pillar is not None:
        args.append("pillar=" + json.dumps(pillar))
    ret = lab.salt(*args, timeout=600)
    assert not state_failures(ret), "\n".join(state_failures(ret))
    holds = [st for st in ret.get(HOST, {}).values() if st.get("__id__") == "mailfleet-outbound-hold"]
    assert len(holds) == 1, f"no mailfleet-outbound-hold state in the return: {str(ret)[:2000]}"
    return holds[0]


@pytest.fixture
def wrong_ptr(lab, published):
    original = lookup(REV, "PTR")
    assert original == [f"{HOST}."], original
    nsupdate(REV_ZONE, ("replace", REV, "PTR", WRONG))
    try:
        yield
    finally:
        nsupdate(REV_ZONE, ("replace", REV, "PTR", *original))


def fix_ptr():
    nsupdate(REV_ZONE, ("replace", REV, "PTR", f"{HOST}."))


def test_verify_reports_a_wrong_ptr(lab, wrong_ptr):
    code, ret, out = salt_run("mailfleet_dns.verify", f"domains={LAB_MAIL_DOMAINS}")
    assert code != 0 and ret and not ret["ok"], out[-3000:]
    bad = ret["fcrdns"][HOST][IP]
    assert bad["ok"] is False and WRONG in bad["detail"] and HOST in bad["detail"], bad
    assert all(c["ok"] for c in ret["fcrdns"]["mail02.lab.test"].values())
    # The host's own check (what the hold uses) agrees.
    chk = lab.salt(HOST, "mailfleet_fcrdns.check")[HOST]
    assert chk["ok"] is False and "mail99.lab.test" in chk["addresses"][IP]["detail"]


def queue(lab) -> list[dict]:
    out = lab.run("mail01", "postqueue", "-j").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]



def test_outbound_mail_is_held_while_the_ptr_is_wrong_and_delivered_once_fixed(lab, wrong_ptr):
    needle = tag("ptrhold")
    try:
        hold = apply_hold(lab, HOLD)
        assert "HELD" in hold["comment"] and WRONG.rstrip(".") in hold["comment"], hold
        assert lab.run("mail01", "postconf", "-h", "sender_dependent_default_transport_maps"
                       ).stdout.strip().endswith("mailfleet_outbound_hold.regexp")
        lab.run("mail01", "postfix", "check")
        # While the switch is on, a minion schedule re-checks (releases without anyone applying).
        assert "mailfleet_outbound_hold_recheck" in json.dumps(lab.salt(HOST, "schedule.list",
                                                                        "return_yaml=False"))
        # Local mail from alice on mail01 to bob on mail02: outbound.
        lab.run("mail01", "sh", "-c",
                f"printf 'Subject: {needle}\\nMessage-ID: <{needle}@example-a.test>\\n\\n"
                f"held until the PTR matches\\n' | sendmail -f alice@example-a.test bob@example-b.test")

        def deferred():
            return [m for m in queue(lab) if m["queue_name"] == "deferred" and
                    any("held by mailfleet" in r.get("delay_reason", "") for r in m["recipients"])
                    and m["recipients"][0]["address"] == "bob@example-b.test"]
        (msg,) = wait(deferred, QUEUE_ID_TIMEOUT, "the message in the deferred queue")
        qid = msg["queue_id"]
        reason = msg["recipients"][0]["delay_reason"]
        assert "FCrDNS of mail01.lab.test fails" in reason and "mail99.lab.test" in reason
        # A flush (what an impatient admin types) does not let it out either.
        lab.run("mail01", "postqueue", "-f")
        time.sleep(5)
        assert [m["queue_id"] for m in deferred()] == [qid]
        lines = log_lines(lab, "mail01", f"{qid}:")
        assert any("status=deferred" in l and "dsn=4.7.1" in l for l in lines), lines
        assert not [l for l in lines if "status=bounced" in l or "non-delivery notification" in l
                    or "status=sent" in l], lines
        assert not log_lines(lab, "mail02", needle)
        # held mail never expires while held (Postfix's default would bounce it after 5 days)
        for name in ("maximal_queue_lifetime", "bounce_queue_lifetime"):
            assert lab.run("mail01", "postconf", "-h", name).stdout.strip() == "100d"

        fix_ptr()
        released = apply_hold(lab, HOLD)
        assert "passes" in released["comment"], released
        sent = wait(lambda: [l for l in log_lines(lab, "mail01", f"{qid}:") if "status=sent" in l],
                    60, "delivery after the release")
        assert "relay=mail02.lab.test" in sent[0]
        assert wait(lambda: log_lines(lab, "mail02", f"<{needle}@example-a.test>"), 30,
                    "the message on mail02")
        assert not [m for m in queue(lab) if m["queue_id"] == qid]
        assert not [l for l in log_lines(lab, "mail01", f"{qid}:") if "status=bounced" in l]
    finally:
        fix_ptr()
        # Switch off again (no command-line pillar): main.cf no longer names the table.
        apply_hold(lab)
    assert lab.run("mail01", "postconf", "-h", "sender_dependent_default_transport_maps"
                   ).stdout.strip() == ""
    assert "mailfleet_outbound_hold_recheck" not in json.dumps(
        lab.salt(HOST, "schedule.list", "return_yaml=False"))
