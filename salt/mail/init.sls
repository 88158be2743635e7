# The mail host: one SLS per concern. Settings are checked first (failhard), so a bad
# pillar changes nothing.
include:
  - mail.validate
  - mail.packages
  - mail.database
  - mail.tls
  - mail.mtasts       # MTA-STS policies over HTTPS for domains with dns:mta_sts
  - mail.postfix
  - mail.outbound_hold   # hold mail to other domains while FCrDNS fails (mailfleet:deliverability:hold_outbound_on_bad_ptr)
  - mail.dovecot
  - mail.rspamd
  - mail.firewall
  - mail.defense
  - mail.dnsbl       # outbound mode from the ledger (DNSBL: relay through a peer / hold)
  - mail.sasl_hold   # held SASL users from the ledger (compromised accounts)
  - mail.vusers
  - mail.webmail     # Roundcube/PostfixAdmin when mailfleet:webmail/postfixadmin:enabled (else removes them)
