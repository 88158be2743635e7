"""Rotating a database password (issue 14, finding 5): the job return shows no password.

The postmaster rotates mail01's Postfix DB password (pillar mailfleet:db:postfix_password,
given on the command line here, as a new value in the host's pillar file would be) and applies
the states that use it: MariaDB's account, Postfix's SQL maps. Mail for alice is still
accepted (Postfix logs in with the new password), and neither the new nor the old password
appears anywhere in the return the CLI prints (and the master's job cache keeps)."""
import json

import pytest

from conftest import state_failures
from mailtools import swaks, tag, wait_for_mail

H1 = "mail01.lab.test"
OLD = "lab-mail01-postfix-7Qe2"  # pillar/lab/hosts/mail01.sls
SLS = "mail.database,mail.postfix"


@pytest.fixture
def restored(lab, converged):
    yield
    ret = lab.salt(H1, "state.apply", SLS, timeout=600)
    assert not state_failures(ret), state_failures(ret)


def test_a_rotated_db_password_works_and_no_job_return_shows_it(lab, restored):
    new = "rotated-" + tag("pw").replace("/", "-")
    pillar = {"mailfleet": {"db": {"postfix_password": new}}}
    ret = lab.salt(H1, "state.apply", SLS, f"pillar={json.dumps(pillar)}", timeout=600)
    assert not state_failures(ret), state_failures(ret)
    text = json.dumps(ret)
    changed = [v.get("name") for v in ret[H1].values() if isinstance(v, dict) and v.get("changes")]
    assert changed, "nothing changed: the rotation was not applied"
    assert new not in text and OLD not in text, [k for k, v in ret[H1].items() if new in json.dumps(v)]
    # Postfix's SQL maps log in with the new password: mail for alice is accepted
    subject = tag("rotated")
    proc = swaks(lab, "outside", "--server", H1, "--port", "25", "--ehlo", "outside.lab.test",
                 "--from", "someone@outside.lab.test", "--to", "alice@example-a.test",
                 "--header", f"Subject: {subject}", check=False)
    assert "250 2.0.0 Ok: queued" in proc.stdout, proc.stdout[-1500:]
    assert wait_for_mail(lab, "alice@example-a.test", subject)
