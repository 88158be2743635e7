# Pillar top for the lab fleet. Secrets reach only the hosts that need them: a domain's
# file (its mailboxes' hashes) goes only to the hosts that serve it; a host's file (its DB
# passwords, its probe password) only to that host.
base:
  '*mail*.lab.test':
    - lab.common
  'mail01.lab.test':
    - lab.hosts.mail01
    - lab.domains.example-a
  'mail02.lab.test':
    - lab.hosts.mail02
    - lab.domains.example-b
