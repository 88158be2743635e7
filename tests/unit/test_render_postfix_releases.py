"""What mailfleet relies on in Postfix is written in main.cf, not left to each release's
defaults. Debian 13's Postfix 3.10 changed these defaults against Debian 12's 3.7.11
(`postconf -d` of both lab images side by side): smtpd_forbid_bare_newline (no -> normalize),
smtpd_forbid_unauth_pipelining (no -> yes), milter_default_action (tempfail -> shutdown),
the TLS cipher lists (3.10's drop RC4, 3DES, MD5 ...) and smtp_tls_dane_insecure_mx_policy
(only used at security level dane). The main.cf rendered for either release sets the ones
that decide whether mail is accepted, deferred or refused, with the same values."""
import pytest

from salt_render import DEBIAN13_GRAINS, DEBIAN_GRAINS, SaltRender

RELIED_ON = {
    "compatibility_level": "3.6",
    "smtpd_forbid_bare_newline": "yes",        # 3.7: no, 3.10: normalize
    "smtpd_forbid_unauth_pipelining": "yes",   # 3.7: no, 3.10: yes
    "milter_default_action": "accept",         # 3.7: tempfail, 3.10: shutdown; rspamd down never refuses
    "smtpd_tls_auth_only": "yes",
    "smtpd_tls_mandatory_protocols": ">=TLSv1.2",
}


def _main_cf(tmp, grains):
    pillar = {"mailfleet": {"rspamd": {"milter": True},
                            "db": {"postfix_password": "pf-pw", "dovecot_password": "dc-pw",
                                   "sync_password": "sy-pw"}}}
    r = SaltRender(tmp, grains, pillar=pillar)
    text = r.render_all(r.show_sls("mail.postfix"))["/etc/postfix/main.cf"]
    return dict(line.split(" = ", 1) for line in text.splitlines() if " = " in line and not line.startswith("#"))


@pytest.mark.parametrize("grains", [DEBIAN_GRAINS, DEBIAN13_GRAINS], ids=["Debian-12", "Debian-13"])
def test_main_cf_sets_what_mailfleet_relies_on_whatever_the_release_defaults(tmp_path, grains):
    main = _main_cf(tmp_path, grains)
    assert {k: main.get(k) for k in RELIED_ON} == RELIED_ON
