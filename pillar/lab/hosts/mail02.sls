# mail02.lab.test only. Lab secrets (a production pillar keeps these out of git).
mailfleet:
  db:
    postfix_password: lab-mail02-postfix-Lz08
    dovecot_password: lab-mail02-dovecot-Vb56
    sync_password: lab-mail02-sync-Hq27
  postmaster: bob@example-b.test
  probe:
    address: mailcheck@example-b.test
    password: probe02-lab-pw
  # Roundcube and PostfixAdmin here too: Debian 13's packages (Roundcube 1.6.20, PostfixAdmin
  # 3.3.15, PHP 8.4) beside mail01's Debian 12 ones.
  webmail:
    enabled: true
    product_name: mailfleet lab webmail
    des_key: lab-mail02-rcdes-4Tw8Kp3  # exactly 24 characters
    db_password: lab-mail02-roundcube-Hn37
  postfixadmin:
    enabled: true
    # The lab machine (salt-master, where the browser tests run); outside.lab.test is not listed.
    allow: [198.18.0.1/32, 127.0.0.1/32]
    db_password: lab-mail02-pfadmin-Wc64
    # password_hash('lab-setup-pw-4471', PASSWORD_BCRYPT): tests/lab/passwords.json
    setup_password: '$2y$10$BEfh6LxD2MQX0slvp19QAuC479X8XAWg/p7HDJ2I2bDyrSUNLY2sm'
    admins:
      # tests/lab/passwords.json has the password
      admin@lab.test: '{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$YgWLpBfLVIWshIoIIUSyPQ$DtQx+H6fQM+nFayXpsN+C0NJHwsPqi2AI1dpoSHma4M'
