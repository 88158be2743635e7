# example-b.test, served by mail02. Password hashes only (ARGON2ID, made with doveadm pw).
mailfleet:
  domains:
    example-b.test:
      hosts: [mail02.lab.test]
      description: Lab domain B
      quota: 1G
      mailboxes:
        bob:
          name: Bob Example
          password: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$R2rWrzQsUalWSAA41QpprQ$fHQ5LDz0S3v2WR6cQpn78y9h1ge0PiEOx+r9i29cpsk"
        mailcheck:
          name: mailfleet probe (mail02)
          password: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$mmi4WMW1OLrcIsrOaqlnuA$w6K+d1+HKKET/inVrn6jWnmpXdMIsC7gnhgFyZlqoqA"
      aliases:
        info: [bob@example-b.test]
