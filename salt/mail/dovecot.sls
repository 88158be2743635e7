{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
  - mail.database
  - mail.tls
  - mail.vmail
{{ sysrc(L, "dovecot") }}

{%- if mf.lookup.dovecot_major == "2.3" %}
mailfleet-dovecot-sql:
  file.managed:
    - name: {{ L.dovecot_dir }}/dovecot-sql.conf.ext
    - source: salt://mail/files/dovecot-sql.conf.ext.jinja
    - template: jinja
    - show_changes: False   # holds the DB password: no diff in the job return
    - context:
        mf: {{ mf | json }}
    - user: root
    - group: dovecot
    - mode: "0640"
    - require:
      - pkg: mailfleet-packages
    - watch_in:
      - service: mailfleet-dovecot
{%- endif %}

mailfleet-dovecot-conf:
  file.managed:
    - name: {{ L.dovecot_dir }}/dovecot.conf
    - source: salt://mail/files/dovecot-{{ mf.lookup.dovecot_major }}.conf.jinja
    - template: jinja
    {#- 2.4 keeps the SQL password in dovecot.conf itself: no diff in the job return #}
    - show_changes: {{ mf.lookup.dovecot_major == "2.3" }}
    - context:
        mf: {{ mf | json }}
    - user: root
    - group: dovecot
    - mode: "{{ '0644' if mf.lookup.dovecot_major == '2.3' else '0640' }}"
    - check_cmd: doveconf -n -c
    - require:
      - cmd: mailfleet-certificate
      - pkg: mailfleet-packages
    - watch_in:
      - service: mailfleet-dovecot

{#- Dovecot's auth, LMTP and quota-status sockets live in Postfix's private/ folder; a
    bare Debian 13 host has none until Postfix first starts, and Dovecot refuses to start
    without it. The owner and mode are Postfix's own (postfix-files). #}
mailfleet-dovecot-postfix-private:
  file.directory:
    - name: {{ L.postfix_spool }}/private
    - user: postfix
    - group: {{ L.root_group }}
    - mode: "0700"
    - require:
      - pkg: mailfleet-packages

mailfleet-dovecot:
  service.running:
    - name: dovecot
    - enable: True
    - reload: True
    - require:
      - mailfleet_db: mailfleet-database
      - file: mailfleet-vmail-home
      - file: mailfleet-dovecot-postfix-private
