{#- Domains, mailboxes and aliases from pillar into MariaDB: one validated transaction
    (the mailfleet_vusers state). #}
{%- from "mail/map.jinja" import mf with context %}
include:
  - mail.database

mailfleet-virtual-users:
  mailfleet_vusers.synced:
    - name: mailfleet
    - socket: {{ mf.lookup.mysql_socket | json }}   {#- parameters/os_family, or mailfleet:lookup #}
    - vmail_dir: {{ mf.lookup.vmail_home | json }}
    - require:
      - mailfleet_db: mailfleet-db-user-sync
