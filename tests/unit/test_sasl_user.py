"""The one SASL user-name check (_utils/mailfleet_sasl_user.py), shared by the master's
accounts runner and the host's hold map: each sample with the expected result beside it."""
import pytest

import mailfleet_sasl_user
from _modules import mailfleet_sasl_hold
from _runners import mailfleet_accounts

SAMPLES = [
    ("alice@example-a.test", "alice@example-a.test"),
    ("Alice@Example-A.test", "alice@example-a.test"),       # map keys are lower case
    ("bob", "bob"),                                          # a bare login name
    ("x" * 100, "x" * 100),                                  # the longest accepted
    ("x" * 101, ValueError),
    ("", ValueError),
    ("alice bob", ValueError),                               # a space splits a map line
    ("alice,bob@example.test", ValueError),                  # a comma lists two keys
    ("#alice", ValueError),                                  # a comment line in the map
    (":alice", ValueError),
    ("alice\n@example.test", ValueError),                    # a second map line
    ("alice\x00", ValueError),
    (None, ValueError),
    (12, ValueError),
]


@pytest.mark.parametrize("user, expected", SAMPLES)
def test_each_sample(user, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="not a SASL user name"):
            mailfleet_sasl_user.valid_user(user)
    else:
        assert mailfleet_sasl_user.valid_user(user) == expected


def test_runner_and_host_use_the_same_check():
    assert mailfleet_accounts._valid_user is mailfleet_sasl_user.valid_user
    assert mailfleet_sasl_hold._valid_user is mailfleet_sasl_user.valid_user
    assert "valid_user" not in vars(mailfleet_accounts) and "valid_user" not in vars(mailfleet_sasl_hold)
