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
  # Roundcube and PostfixAdmin (mail.webmail): Debian 12's packages here, Debian 13's on mail02.
  webmail:
    enabled: true
    product_name: mailfleet lab webmail
    des_key: lab-mail01-rcdes-9Xq2Lm7  # exactly 24 characters
    db_password: lab-mail01-roundcube-Vb82
  postfixadmin:
    enabled: true
    # The lab machine (salt-master, where the browser tests run); outside.lab.test is not listed.
    allow: [198.18.0.1/32, 127.0.0.1/32]
    db_password: lab-mail01-pfadmin-Qz57
    # password_hash('lab-setup-pw-4471', PASSWORD_BCRYPT): tests/lab/passwords.json
    setup_password: '$2y$10$BEfh6LxD2MQX0slvp19QAuC479X8XAWg/p7HDJ2I2bDyrSUNLY2sm'
    admins:
      # tests/lab/passwords.json has the password
      admin@lab.test: '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$YgWLpBfLVIWshIoIIUSyPQ$DtQx+H6fQM+nFayXpsN+C0NJHwsPqi2AI1dpoSHma4M'
