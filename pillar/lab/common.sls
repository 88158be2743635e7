# Settings every lab mail host shares (no secrets here).
mailfleet:
  tls:
    acme_server: https://acme.lab.test:14000/dir
    contact: postmaster@lab.test
  host:
    # The seed's sabotage exercise relies on this: a HELO name that does not resolve is refused.
    reject_unknown_helo_hostname: true
    submissions: true
