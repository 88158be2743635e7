# example-a.test, served by mail01. Password hashes only (ARGON2ID, made with doveadm pw).
mailfleet:
  domains:
    example-a.test:
      hosts: [mail01.lab.test]
      description: Lab domain A
      quota: 1G
      mailboxes:
        alice:
          name: Alice Example
          password: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$ufUpK75mCZLSuPY4KgL7iA$k2YaMOFXZ30QJ/lxZUn6MDghIRKoVkv+woxPzxynmyE"
        mailcheck:
          name: mailfleet probe (mail01)
          password: "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$BxzsGiIX94pXqzAP1dgx4w$7I8NZysKSFDY/P7k9+akECXukaa3TKRUJq852P7GlHE"
      aliases:
        info: [alice@example-a.test]
