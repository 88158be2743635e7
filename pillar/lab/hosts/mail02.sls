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
