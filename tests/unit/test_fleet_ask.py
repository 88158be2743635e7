"""mailfleet_ask: a host that is reconnecting is asked again within the bound, not dropped
from the run (issue 12). The LocalClient is a stand-in here: a minion between two
connections cannot be caused in a unit test (the lab's first-apply test runs the real path)."""
import mailfleet_ask


class Client:
    """Answers for the minions in ``online``; mail02 comes online after ``late`` calls."""

    def __init__(self, late):
        self.calls, self.late = [], late

    def cmd(self, tgt, fun, arg=(), kwarg=None, tgt_type="glob", timeout=None):
        self.calls.append((tgt, tgt_type))
        online = {"mail01.lab.test"} | ({"mail02.lab.test"} if len(self.calls) > self.late else set())
        names = online if tgt_type == "glob" else set(tgt) & online
        return {m: {"id": m} for m in names}


def test_a_reconnecting_host_is_asked_again_and_counted(monkeypatch):
    monkeypatch.setattr(mailfleet_ask, "expected", lambda *a: {"mail01.lab.test", "mail02.lab.test"})
    client = Client(late=2)
    rets, missing = mailfleet_ask.ask({}, "*mail*", "grains.items", client=client, bound=10, pause=0.01)
    assert set(rets) == {"mail01.lab.test", "mail02.lab.test"} and missing == []
    # the first call targets as asked, the retries only who had not answered
    assert client.calls == [("*mail*", "glob"), (["mail02.lab.test"], "list"), (["mail02.lab.test"], "list")]


def test_a_host_that_never_answers_is_named_after_the_bound(monkeypatch):
    monkeypatch.setattr(mailfleet_ask, "expected", lambda *a: {"mail01.lab.test", "mail02.lab.test"})
    rets, missing = mailfleet_ask.ask({}, "*mail*", "grains.items", client=Client(late=10**6), bound=0.2, pause=0.05)
    assert set(rets) == {"mail01.lab.test"} and missing == ["mail02.lab.test"]


def test_a_return_that_does_not_count_is_asked_again(monkeypatch):
    monkeypatch.setattr(mailfleet_ask, "expected", lambda *a: {"mail01.lab.test"})

    class Flaky(Client):
        def cmd(self, *a, **k):
            got = super().cmd(*a, **k)
            return {m: ("Minion did not return. [Not connected]" if len(self.calls) == 1 else v) for m, v in got.items()}

    rets, missing = mailfleet_ask.ask({}, "*mail*", "grains.items", client=Flaky(0), bound=5, pause=0.01,
                                      answered=lambda _m, v: isinstance(v, dict))
    assert rets == {"mail01.lab.test": {"id": "mail01.lab.test"}} and missing == []
