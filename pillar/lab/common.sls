# Settings every lab mail host shares (no secrets here).
mailfleet:
  tls:
    acme_server: https://acme.lab.test:14000/dir
    contact: postmaster@lab.test
  host:
    # The seed's sabotage exercise relies on this: a HELO name that does not resolve is refused.
    reject_unknown_helo_hostname: true
    submissions: true
  defense:
    # outside.lab.test is the lab's well-behaved client, and the mail-host tests use it to
    # check that relaying and bad passwords are refused: that must not get it banned.
    # (The master's mailfleet_defense runner reads this allow-list from each host's pillar.)
    allow: [198.18.0.100]
  dnsbl:
    # The lab's own DNSBL zone on the lab BIND (lab/mflab/zones.py), asked through the hosts'
    # resolver (198.18.0.2); a short interval so tests/lab/test_55_dnsbl.py sees changes fast.
    zones: [dnsbl.lab.test]
    interval: 3
    timeout: 3
    refresh: 30     # restate every verdict twice a minute (catch-up for a lost event)
