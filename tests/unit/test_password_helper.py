"""
The password-hash helper: the master's runner (pure Python) writes each scheme in Dovecot's
exact format, and the mail host's execution module feeds doveadm the password on stdin only.

That Dovecot itself verifies every scheme's runner output (doveadm pw -t) is checked in the
lab: tests/lab/test_21_quota_and_passwords.py.
"""
import io
import os
import re
import stat

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

import mailfleet_pillar_values as values
from _runners import mailfleet_password as runner
from _modules import mailfleet_password as module
import mailfleet_password_rules as rules

PW = "correct horse battery staple"
B64 = r"[A-Za-z0-9+/]"
FORMAT = {
    # libsodium crypto_pwhash_str as Dovecot writes it: 16-byte salt, 32-byte hash, no padding
    "ARGON2ID": re.compile(r"\{ARGON2ID\}\$argon2id\$v=19\$m=65536,t=3,p=1\$" + B64 + r"{22}\$" + B64 + r"{43}"),
    # glibc SHA-crypt with the default 5000 rounds: no rounds= field, 16-char salt, 86-char hash
    "SHA512-CRYPT": re.compile(r"\{SHA512-CRYPT\}\$6\$[./A-Za-z0-9]{16}\$[./A-Za-z0-9]{86}"),
    # crypt_blowfish as Dovecot writes it: $2y$, cost 05, 22-char salt + 31-char hash
    "BLF-CRYPT": re.compile(r"\{BLF-CRYPT\}\$2y\$05\$[./A-Za-z0-9]{53}"),
}


@pytest.mark.parametrize("scheme", runner.SCHEMES)
def test_runner_output_is_dovecots_format(scheme):
    first = runner.make_hash(PW, scheme)
    assert FORMAT[scheme].fullmatch(first), first
    assert runner.make_hash(PW, scheme) != first            # a fresh salt every time
    assert values.check_password(first) is None    # the sync accepts it as is
    assert PW not in first


def test_default_scheme_is_argon2id():
    assert runner.make_hash(PW).startswith("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$")


@pytest.mark.parametrize("scheme", runner.SCHEMES)
def test_runner_hashes_verify_with_the_reference_libraries(scheme):
    import argon2
    import bcrypt
    from passlib.hash import sha512_crypt

    h = runner.make_hash(PW, scheme)
    body = h.split("}", 1)[1]
    if scheme == "ARGON2ID":
        assert argon2.PasswordHasher().verify(body, PW)
        with pytest.raises(argon2.exceptions.VerifyMismatchError):
            argon2.PasswordHasher().verify(body, PW + "x")
    elif scheme == "SHA512-CRYPT":
        assert sha512_crypt.verify(PW, body) and not sha512_crypt.verify(PW + "x", body)
    else:
        # $2y$ and $2b$ are the same (fixed) bcrypt; pyca/bcrypt reads both
        assert bcrypt.checkpw(PW.encode(), body.encode())
        assert not bcrypt.checkpw((PW + "x").encode(), body.encode())


def test_sha512_crypt_matches_glibc_test_vector():
    # Ulrich Drepper's SHA-crypt specification, test vectors (what glibc and Dovecot compute)
    from passlib.hash import sha512_crypt
    assert sha512_crypt.using(salt="saltstring", rounds=5000).hash("Hello world!") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
    assert sha512_crypt.using(salt="saltstringsaltst", rounds=10000).hash("Hello world!") == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZ"
        "eHBy/YTBmSK6H9qs/y3RnOaw5v.")


def test_rounds():
    assert "$m=65536,t=4,p=1$" in runner.make_hash(PW, "ARGON2ID", rounds=4)
    assert runner.make_hash(PW, "SHA512-CRYPT", rounds=10000).startswith("{SHA512-CRYPT}$6$rounds=10000$")
    assert runner.make_hash(PW, "BLF-CRYPT", rounds=10).startswith("{BLF-CRYPT}$2y$10$")
    for scheme, bad in (("BLF-CRYPT", 3), ("BLF-CRYPT", 32), ("SHA512-CRYPT", 999), ("ARGON2ID", 0),
                        ("ARGON2ID", "3"), ("ARGON2ID", True)):
        with pytest.raises(SaltInvocationError, match="rounds"):
            runner.make_hash(PW, scheme, rounds=bad)


def test_refusals_never_echo_the_password():
    helper = rules   # one copy of the rules, for the runner and the mail host's module
    cases = [("", "ARGON2ID", "empty"), ("a\nb", "ARGON2ID", "line break"),
             ("a\rb", "ARGON2ID", "line break"), ("a\0b", "ARGON2ID", "NUL"),
             ("é" * 37, "BLF-CRYPT", "72 bytes"), (1234, "ARGON2ID", "string")]
    for password, scheme, why in cases:
        with pytest.raises(SaltInvocationError, match=why) as exc:
            helper.check_password(password, scheme)
        if isinstance(password, str) and password:
            assert password not in str(exc.value)
    assert helper.check_password("é" * 36, "BLF-CRYPT")      # 72 bytes: fine
    with pytest.raises(SaltInvocationError, match="not supported"):
        helper.check_scheme("MD5-CRYPT")
    assert helper.check_scheme("{blf-crypt}") == "BLF-CRYPT"


@pytest.mark.parametrize("hasher", [runner.make_hash, module.hash])
def test_both_hashers_refuse_by_the_same_rules(hasher):
    for password, scheme, why in [("a\nb", "ARGON2ID", "line break"), ("é" * 37, "BLF-CRYPT", "72 bytes"),
                                  (PW, "MD5-CRYPT", "not supported")]:
        with pytest.raises(SaltInvocationError, match=why):
            hasher(password, scheme)


def test_unicode_password_is_hashed_as_utf8():
    import bcrypt
    h = runner.make_hash("pässwörd", "BLF-CRYPT")
    assert bcrypt.checkpw("pässwörd".encode("utf-8"), h.split("}", 1)[1].encode())


def test_read_password_from_stdin_without_a_terminal():
    assert runner.read_password(io.StringIO("s3cret pw\nrest\n")) == "s3cret pw"
    assert runner.read_password(io.StringIO("no newline")) == "no newline"
    with pytest.raises(SaltInvocationError, match="no password"):
        runner.read_password(io.StringIO(""))


def test_read_password_prompts_twice_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    answers = iter(["pw-one", "pw-one"])
    assert runner.read_password(Tty(), ask=lambda prompt: next(answers)) == "pw-one"
    answers = iter(["pw-one", "pw-two"])
    with pytest.raises(SaltInvocationError, match="do not match"):
        runner.read_password(Tty(), ask=lambda prompt: next(answers))


def test_runner_hash_refuses_a_number_from_the_cli():
    with pytest.raises(SaltInvocationError, match="quote it"):
        runner.hash(12345678)


# --- execution module against a stand-in doveadm ------------------------------------------

FAKE_DOVEADM = r"""#!/bin/sh
# Records its argv and stdin, then answers like doveadm pw (or as $FAKE_MODE says).
printf '%s\n' "$@" > "$FAKE_DIR/argv"
cat > "$FAKE_DIR/stdin"
case "$FAKE_MODE" in
  ok-hash) echo '{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234 (verified)' ;;
  mismatch) echo "Error: Passwords don't match!" >&2
            echo '{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234 (verified)' ;;
  ok-verify) echo '{BLF-CRYPT}$2y$05$x (verified)' ;;
  bad-verify) echo 'Fatal: reverse password verification check failed: Password mismatch' >&2; exit 89 ;;
  bad-hash) echo 'Fatal: reverse decode check failed: bad' >&2; exit 89 ;;
esac
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "doveadm"
    script.write_text(FAKE_DOVEADM)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(module, "_doveadm", lambda: str(script))
    real_run = module.subprocess.run

    def run(argv, **kw):
        kw["env"] = dict(kw.get("env") or {}, FAKE_DIR=str(tmp_path), FAKE_MODE=os.environ["FAKE_MODE"])
        return real_run(argv, **kw)
    monkeypatch.setattr(module.subprocess, "run", run)

    def mode(name):
        monkeypatch.setenv("FAKE_MODE", name)
        return tmp_path
    return mode


def test_module_hash_sends_the_password_on_stdin_only(fake):
    d = fake("ok-hash")
    out = module.hash(PW, "BLF-CRYPT", rounds=10)
    assert out == "{BLF-CRYPT}$2y$05$abcdefghijklmnopqrstuvABCDEFGHIJKLMNOPQRSTUVWXYZ01234"
    argv = (d / "argv").read_text().split("\n")
    assert argv[:6] == ["pw", "-s", "BLF-CRYPT", "-V", "-r", "10"]
    assert PW not in (d / "argv").read_text()
    assert (d / "stdin").read_text() == f"{PW}\n{PW}\n"       # typed twice, as doveadm asks


def test_module_hash_refuses_a_run_with_complaints(fake):
    # doveadm retries a mismatched pair and may then hash an empty line: never accept that
    fake("mismatch")
    with pytest.raises(CommandExecutionError, match="don't match"):
        module.hash(PW, "BLF-CRYPT")


def test_module_verify(fake):
    d = fake("ok-verify")
    assert module.verify(PW, "{BLF-CRYPT}$2y$05$x") is True
    assert (d / "argv").read_text().split("\n")[:3] == ["pw", "-t", "{BLF-CRYPT}$2y$05$x"]
    assert (d / "stdin").read_text() == f"{PW}\n"
    fake("bad-verify")
    assert module.verify(PW, "{BLF-CRYPT}$2y$05$x") is False
    fake("bad-hash")
    with pytest.raises(CommandExecutionError, match="decode"):
        module.verify(PW, "{BLF-CRYPT}$2y$05$x")
    with pytest.raises(SaltInvocationError):
        module.verify(PW, "no-scheme")
