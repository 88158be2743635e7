"""
The one SASL user-name check of mailfleet, for both sides of an account hold: the master's
mailfleet_accounts runner (what a host reports, what the postmaster types) and the host's
mailfleet_sasl_hold module (the hold map Postfix reads). A name that passes is fit for a
Postfix map key: no white space, comma, control character, or leading ``#`` or ``:``;
at most 100 characters. Pure; imported plainly (Salt puts the utils directories on
``sys.path``).
"""
import re

__virtualname__ = "mailfleet_sasl_user"

USER_RE = re.compile(r"^[^\s#:,\x00-\x1f\x7f][^\s,\x00-\x1f\x7f]{0,99}$")


def __virtual__():
    return __virtualname__


def valid_user(user):
    """The lower-case SASL user name, or ValueError (the message shows at most 80 characters)."""
    if not isinstance(user, str) or not USER_RE.fullmatch(user):
        raise ValueError(f"not a SASL user name: {str(user)[:80]!r}")
    return user.lower()
