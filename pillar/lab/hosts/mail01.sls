# mail01.lab.test only. Lab secrets (a production pillar keeps these out of git).
mailfleet:
  db:
    postfix_password: lab-mail01-postfix-7Qe2
    dovecot_password: lab-mail01-dovecot-Jk41
    sync_password: lab-mail01-sync-Pw93
  postmaster: alice@example-a.test
  probe:
    # The ritual (mailcheck) logs in with this; only this host's pillar holds it.
    address: mailcheck@example-a.test
    password: probe01-lab-pw
