"""
Password hashes for mailbox pillar, made on the salt master (which has no doveadm).

Output is in Dovecot's exact format, the same string ``doveadm pw -s SCHEME`` prints on a
mail host, ready to paste as a mailbox's ``password`` in a domain file:

==============  ===========================================================================
scheme          output (Dovecot's defaults; ``rounds`` raises the cost)
==============  ===========================================================================
ARGON2ID        ``{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$<16-byte salt>$<32-byte hash>``
SHA512-CRYPT    ``{SHA512-CRYPT}$6$<16-char salt>$<86-char hash>`` (5000 rounds, implicit;
                other rounds are written ``$6$rounds=N$...``)
BLF-CRYPT       ``{BLF-CRYPT}$2y$05$<22-char salt><31-char hash>``
==============  ===========================================================================

Implementations: ARGON2ID with argon2-cffi (the reference Argon2 C code; Dovecot uses
libsodium's crypto_pwhash_str, which writes the same PHC string with these parameters);
BLF-CRYPT with bcrypt (pyca), whose ``$2b$`` is the same algorithm as ``$2y$`` (both name
the fixed OpenBSD/crypt_blowfish bcrypt), so the prefix is written as Dovecot writes it;
SHA512-CRYPT with libpass, the maintained fork of passlib (passlib's last release was
2020 and breaks with current bcrypt; Python 3.13 removed the ``crypt`` module, and
libpass's SHA-crypt is pure Python, so it does not depend on the platform's libcrypt).
Every scheme's output is verified by ``doveadm pw -t`` in the lab test
(tests/lab/test_21_quota_and_passwords.py).

The password comes from the ``password`` argument or, without one, from a prompt (asked
twice) on the terminal, or from the first line of standard input when there is no
terminal. Prefer the prompt: an argument is part of the runner job's arguments, which
Salt puts on the master's event bus (``salt/run/<jid>/new``). This runner never logs the
password and never returns it.

CLI Example:

.. code-block:: bash

    salt-run mailfleet_password.hash                        # prompts; ARGON2ID
    salt-run mailfleet_password.hash scheme=SHA512-CRYPT
    salt-run mailfleet_password.hash scheme=BLF-CRYPT rounds=10
    printf '%s\\n' "$PW" | salt-run mailfleet_password.hash  # no terminal: one line of stdin
    salt-run mailfleet_password.hash 'correct horse battery' # on the event bus, see above
"""
import getpass
import logging
import os
import sys

from salt.exceptions import SaltInvocationError

# salt://_utils: Salt's runner loader puts the utils directories on sys.path while it loads
# salt://_utils (on sys.path): the mail host's module checks with the same rules.
from mailfleet_password_rules import SCHEMES  # noqa: F401  (the schemes this runner hashes)
from mailfleet_password_rules import check_password as _check_password
from mailfleet_password_rules import check_scheme as _check_scheme

log = logging.getLogger(__name__)

__virtualname__ = "mailfleet_password"

# Dovecot 2.3's defaults (doveadm pw): libsodium's OPSLIMIT_INTERACTIVE (t=3) and
# MEMLIMIT_INTERACTIVE (64 MiB) for ARGON2ID; glibc's 5000 rounds for SHA512-CRYPT;
# cost 5 for BLF-CRYPT (src/auth/password-scheme-crypt.c).
ARGON2 = {"time_cost": 3, "memory_cost": 65536, "parallelism": 1, "hash_len": 32, "salt_len": 16}
SHA512_DEFAULT_ROUNDS = 5000
BLF_DEFAULT_COST = 5


# The operator surface: what Salt's loader exposes (and `salt-run -d` lists); every other
# function here is a helper: importable from Python, not loaded by Salt.
__load__ = ("hash",)


def __virtual__():
    return __virtualname__


# ---------------------------------------------------------------------------------------
# Pure logic (unit-tested in tests/unit/test_password_helper.py)
# ---------------------------------------------------------------------------------------




def _rounds(rounds, low, high):
    if rounds is None:
        return None
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not low <= rounds <= high:
        raise SaltInvocationError(f"rounds must be an integer from {low} to {high}")
    return rounds


def argon2id(password, rounds=None):
    from argon2.low_level import Type, hash_secret

    params = dict(ARGON2)
    params["time_cost"] = _rounds(rounds, 1, 100) or params["time_cost"]
    salt = os.urandom(params.pop("salt_len"))
    encoded = hash_secret(password.encode("utf-8"), salt, type=Type.ID, **params).decode("ascii")
    return "{ARGON2ID}" + encoded


def sha512_crypt(password, rounds=None):
    from passlib.hash import sha512_crypt as _sha512

    # libpass writes no rounds= field for 5000 (implicit), like glibc and doveadm.
    rounds = _rounds(rounds, 1000, 999999999) or SHA512_DEFAULT_ROUNDS
    return "{SHA512-CRYPT}" + _sha512.using(rounds=rounds, salt_size=16).hash(password)


def blf_crypt(password, rounds=None):
    import bcrypt

    cost = _rounds(rounds, 4, 31) or BLF_DEFAULT_COST
    encoded = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds=cost, prefix=b"2b"))
    return "{BLF-CRYPT}$2y$" + encoded.decode("ascii")[len("$2b$"):]


HASHERS = {"ARGON2ID": argon2id, "SHA512-CRYPT": sha512_crypt, "BLF-CRYPT": blf_crypt}


def make_hash(password, scheme="ARGON2ID", rounds=None):
    """``{SCHEME}...`` for ``password``; the pure core of ``hash``."""
    scheme = _check_scheme(scheme)
    _check_password(password, scheme)
    return HASHERS[scheme](password, rounds)


def read_password(stdin=None, ask=getpass.getpass):
    """The password from a prompt (asked twice) on a terminal, else one line of stdin."""
    stdin = stdin or sys.stdin
    if stdin is not None and stdin.isatty():
        first = ask("Mailbox password: ")
        if first != ask("Again: "):
            raise SaltInvocationError("the passwords do not match")
        return first
    line = stdin.readline() if stdin is not None else ""
    if not line:
        raise SaltInvocationError("no password given: pass it, type it at the prompt, or "
                                  "send one line on standard input")
    return line[:-1] if line.endswith("\n") else line


# ---------------------------------------------------------------------------------------
# Salt glue
# ---------------------------------------------------------------------------------------


def hash(password=None, scheme="ARGON2ID", rounds=None):
    """
    Hash a mailbox password on the master, in Dovecot's format; returns ``{SCHEME}...``.

    password
        The password. Leave it out to be prompted (the safer way: see the module's notes).
    scheme
        ``ARGON2ID`` (default), ``SHA512-CRYPT`` or ``BLF-CRYPT``.
    rounds
        Cost: Argon2 time cost (default 3), SHA-crypt rounds (default 5000) or bcrypt
        cost (default 5), as ``doveadm pw -r``.

    CLI Example:

    .. code-block:: bash

        salt-run mailfleet_password.hash
        salt-run mailfleet_password.hash scheme=BLF-CRYPT rounds=10
    """
    if password is None:
        password = read_password()
    elif isinstance(password, (int, float)) and not isinstance(password, bool):
        # The CLI's YAML turned digits into a number; its text is what was typed, except
        # for forms YAML rewrites (leading zeros, exponents): refuse those.
        raise SaltInvocationError("the password must be a string: quote it, e.g. "
                                  "password='\"12345678\"', or use the prompt")
    result = make_hash(password, scheme, rounds)
    log.debug("mailfleet_password: made a %s hash", _check_scheme(scheme))
    return result
