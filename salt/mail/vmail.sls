{#- The vmail user and group that own every mailbox, and the maildir base
    (mailfleet:vmail, lookup.vmail_home). Dovecot delivers and reads as this user; the
    virtual-user sync archives purged maildirs below its home. #}
{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
mailfleet-vmail-group:
  group.present:
    - name: {{ mf.vmail.user }}
    - gid: {{ mf.vmail.gid }}

mailfleet-vmail-user:
  user.present:
    - name: {{ mf.vmail.user }}
    - uid: {{ mf.vmail.uid }}
    - gid: {{ mf.vmail.gid }}
    - home: {{ L.vmail_home }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: mailfleet-vmail-group

mailfleet-vmail-home:
  file.directory:
    - name: {{ L.vmail_home }}
    - user: {{ mf.vmail.user }}
    - group: {{ mf.vmail.user }}
    - mode: "0750"
    - require:
      - user: mailfleet-vmail-user
