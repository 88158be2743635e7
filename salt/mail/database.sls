{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
{{ sysrc(L, "database") }}

mailfleet-state-dir:
  file.directory:
    - name: /var/lib/mailfleet
    - mode: "0750"
    - makedirs: True

mailfleet-mariadb-config:
  file.managed:
    - name: {{ L.mariadb_conf }}
    - mode: "0644"
    - makedirs: True
    - contents: |
        # mailfleet: the database answers only this host.
        [mysqld]
        bind-address = 127.0.0.1
        skip-name-resolve = 1
        character-set-server = utf8mb4
    - require:
      - pkg: mailfleet-packages

{#- Postfix's lookup processes can stay stuck on a failed MySQL connection after the
    database was down; when MariaDB (re)starts, have Postfix recycle them (reload). #}
{%- if L.os == "Debian" %}
mailfleet-mariadb-recycles-postfix:
  file.managed:
    - name: /etc/systemd/system/{{ L.mariadb_service }}.service.d/mailfleet-postfix.conf
    - makedirs: True
    - mode: "0644"
    - contents: |
        [Service]
        # '+': as root (the service itself runs as mysql, which may not reload postfix).
        ExecStartPost=-+/bin/sh -c 'systemctl is-active -q postfix && systemctl reload --no-block postfix || true'
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: mailfleet-mariadb-recycles-postfix
{%- endif %}

mailfleet-mariadb:
  service.running:
    - name: {{ L.mariadb_service }}
    - enable: True
    - watch:
      - file: mailfleet-mariadb-config

mailfleet-schema-file:
  file.managed:
    - name: /var/lib/mailfleet/postfixadmin-3.3.13.sql
    - source: salt://mail/files/postfixadmin-3.3.13.sql
    - mode: "0640"
    - require:
      - file: mailfleet-state-dir

mailfleet-database:
  mailfleet_db.database:
    - name: {{ mf.db.name }}
    - schema: /var/lib/mailfleet/postfixadmin-3.3.13.sql
    - require:
      - service: mailfleet-mariadb
      - file: mailfleet-schema-file

{#- Least privilege: Postfix and Dovecot only read; only the sync writes. #}
{%- for role, privileges in [("postfix", ["SELECT"]), ("dovecot", ["SELECT"]),
                             ("sync", ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE"])] %}
mailfleet-db-user-{{ role }}:
  mailfleet_db.user:
    - name: {{ mf.db[role ~ "_user"] }}
    - password: {{ mf.db[role ~ "_password"] | json }}
    - database: {{ mf.db.name }}
    - privileges: {{ privileges | json }}
    - require:
      - mailfleet_db: mailfleet-database
{%- endfor %}
