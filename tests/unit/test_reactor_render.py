"""reactor/*.sls rendered by Salt's own Jinja with hostile event data: minion-written text
stays data (tojson), never becomes YAML structure or Jinja code."""
from pathlib import Path

import pytest
import salt.config
import salt.utils.templates
import salt.utils.yaml

REACTOR = Path(__file__).resolve().parents[2] / "reactor"
HOSTILE = ['x"}\n  evil: {{ 7*7 }}', "a\nb: c", "{% raise %}", "<script>&'", "mail01.lab.test\n- tgt: '*'"]


def render(name, data, tag="mailfleet/abuse/report"):
    opts = salt.config.DEFAULT_MASTER_OPTS.copy()
    text = salt.utils.templates.render_jinja_tmpl(
        (REACTOR / name).read_text(), {"tag": tag, "data": data, "opts": opts, "saltenv": "base", "sls": ""})
    return salt.utils.yaml.safe_load(text)


@pytest.mark.parametrize("bad", HOSTILE)
def test_abuse_reaction_passes_hostile_text_as_data(bad):
    data = {"id": bad, "data": {"host": bad, "offenders": [{"ip": bad, "rules": {bad: 3}}]}}
    high = render("abuse.sls", data)
    assert list(high) == ["mailfleet_abuse_report"]
    (fun, args), = high["mailfleet_abuse_report"].items()
    assert fun == "runner.mailfleet_defense.report"
    kwargs = {k: v for d in args[0]["args"] for k, v in d.items()}
    assert kwargs == {"minion": bad, "payload": data["data"]}


def test_abuse_reaction_without_payload():
    high = render("abuse.sls", {"id": "mail01.lab.test"})
    kwargs = {k: v for d in high["mailfleet_abuse_report"]["runner.mailfleet_defense.report"][0]["args"]
              for k, v in d.items()}
    assert kwargs == {"minion": "mail01.lab.test", "payload": None}


@pytest.mark.parametrize("bad", HOSTILE)
def test_start_reaction_targets_only_the_starting_minion(bad):
    high = render("minion_start.sls", {"id": bad}, tag="salt/minion/x/start")
    assert high["mailfleet_bans_reconcile"]["local.mailfleet_ban.reconcile"] == [{"tgt": [bad]}, {"tgt_type": "list"}]
    assert render("minion_start.sls", {}, tag="salt/minion/x/start") in (None, {})
