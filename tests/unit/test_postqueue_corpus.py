"""The queue reader (_utils/mailfleet_postqueue.py) on real `postqueue -j` output of Debian
12's Postfix 3.7.11 and Debian 13's 3.10.13 (tests/unit/postqueue_corpus/), the expected
reading beside each file."""
from pathlib import Path

import pytest

import mailfleet_postqueue as mq

CORPUS = Path(__file__).parent / "postqueue_corpus"
# file -> (alice's queue id and queue, the bounce's queue id and queue, arrival time)
EXPECTED = {
    "postfix-3.7.11.jsonl": (("108C93F", "hold"), ("123AB42", "deferred"), 1796704654),
    "postfix-3.10.13.jsonl": (("0E39E49", "deferred"), ("1066B4A", "hold"), 1796704665),
}


def test_every_corpus_file_has_its_expectation():
    assert sorted(p.name for p in CORPUS.glob("*.jsonl")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_queue_reader_reads_each_releases_postqueue(name):
    (alice_id, alice_q), (bounce_id, bounce_q), arrival = EXPECTED[name]
    msgs, truncated, bad = mq.parse_lines((CORPUS / name).read_bytes().splitlines())
    assert (len(msgs), truncated, bad) == (2, False, 0)
    assert mq.summary(msgs, arrival + 600) == {"deferred": 1, "oldest": 600, "hold": 1, "total": 2}
    assert mq.ids_of_senders(msgs, ["Alice@Example-A.test"]) == [alice_id]
    assert mq.ids_of_senders(msgs, ["alice@example-a.test"], queues={alice_q}) == [alice_id]
    # a bounce has no envelope sender: postqueue names it MAILER-DAEMON, no user's mail
    assert mq.ids_of_senders(msgs, [""]) == []
    assert {m["queue_id"]: m["queue_name"] for m in msgs} == {alice_id: alice_q, bounce_id: bounce_q}
    alice = next(m for m in msgs if m["queue_id"] == alice_id)
    assert [r["address"] for r in alice["recipients"]] == ["bob@elsewhere.test", "carol@elsewhere.test"]
