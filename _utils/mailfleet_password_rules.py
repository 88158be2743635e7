"""
The rules a mailbox password and its hash scheme must meet, one copy for both places that
hash: the mail host's execution module (``_modules/mailfleet_password.py``, doveadm) and
the master's runner (``_runners/mailfleet_password.py``). Pure: imported plainly (Salt puts
the utils directories on ``sys.path``). Messages never contain the password.
"""
from salt.exceptions import SaltInvocationError

__virtualname__ = "mailfleet_password_rules"

SCHEMES = ("ARGON2ID", "SHA512-CRYPT", "BLF-CRYPT")
BCRYPT_MAX_BYTES = 72  # bcrypt reads at most 72 bytes of the password


def __virtual__():
    return __virtualname__


def check_scheme(scheme):
    """The scheme's canonical name (upper case, without braces), or SaltInvocationError."""
    name = str(scheme or "").strip().strip("{}").upper()
    if name not in SCHEMES:
        raise SaltInvocationError(f"scheme {scheme!r} is not supported; use one of {', '.join(SCHEMES)}")
    return name


def check_password(password, scheme=None):
    """Refuse what cannot be hashed faithfully. Messages never contain the password."""
    if not isinstance(password, str):
        # The CLI turns e.g. 1234 into an int: ask for quotes rather than guess.
        raise SaltInvocationError("the password must be a string (quote it)")
    if not password:
        raise SaltInvocationError("empty password refused")
    if any(c in password for c in "\r\n\0"):
        # doveadm (askpass) and IMAP/SMTP clients read a password up to a line end.
        raise SaltInvocationError("the password contains a line break or NUL byte")
    if scheme == "BLF-CRYPT" and len(password.encode("utf-8")) > BCRYPT_MAX_BYTES:
        raise SaltInvocationError(f"BLF-CRYPT (bcrypt) uses at most {BCRYPT_MAX_BYTES} bytes of a "
                                  "password; use ARGON2ID for a longer one")
    return password
