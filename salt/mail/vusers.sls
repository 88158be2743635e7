{#- Domains, mailboxes and aliases from pillar into MariaDB: one validated transaction
    (the mailfleet_vusers state). #}
include:
  - mail.database

mailfleet-virtual-users:
  mailfleet_vusers.synced:
    - name: mailfleet
    - require:
      - mailfleet_db: mailfleet-db-user-sync
