{#- PostfixAdmin 3.3 (mailfleet:postfixadmin) on the mail database: its least-privilege
    account, its configuration (checked with `php -l`) and the superadmins of the pillar.
    Debian's config.inc.php require_once's dbconfig.inc.php; config.local.php wins. #}
{%- from "mail/map.jinja" import mf with context %}
{%- from "mail/webmail/map.jinja" import W, pfa, apps with context %}
{%- if apps.postfixadmin.on %}
{%-   set pfa_db_user = apps.postfixadmin.db_account %}
include:
  - mail.database
  - mail.webmail.php_fpm

mailfleet-postfixadmin-db-user:
  mailfleet_db.user:
    - name: {{ pfa_db_user }}
    - password: {{ pfa.db_password | json }}
    - database: {{ mf.db.name }}
    - privileges: [SELECT, INSERT, UPDATE, DELETE]
    - require:
      - mailfleet_db: mailfleet-database

{#- doveadm pw (PostfixAdmin's hashes) runs as the pool's user, which may not read Dovecot's
    own configuration: on 2.4 dovecot.conf holds the SQL password (0640 root:dovecot). A
    configuration of its own, with no secret, is all `pw` needs. #}
mailfleet-postfixadmin-doveadm-pw-conf:
  file.managed:
    - name: {{ W.postfixadmin_etc }}/doveadm-pw.conf
    - contents: |
        # Managed by mailfleet: the configuration PostfixAdmin's `doveadm pw` reads (no secrets).
{%-   if mf.lookup.dovecot_major != "2.3" %}
        dovecot_config_version = 2.4.0
        dovecot_storage_version = 2.4.0
{%-   endif %}
    - user: root
    - group: root
    - mode: "0644"
    - require:
      - pkg: mailfleet-webmail-packages
    - require_in:
      - service: mailfleet-php-fpm

{%-   for name, src in [("dbconfig.inc.php", "postfixadmin-dbconfig.inc.php.jinja"),
                        ("config.local.php", "postfixadmin-config.local.php.jinja")] %}
mailfleet-postfixadmin-{{ name }}:
  file.managed:
    - name: {{ W.postfixadmin_etc }}/{{ name }}
    - source: salt://mail/files/{{ src }}
    - template: jinja
    - context:
        mf: {{ mf | json }}
        pfa: {{ pfa | json }}
        db_user: {{ pfa_db_user }}
        doveadm: {{ W.doveadm }}
    - user: root
    - group: {{ apps.postfixadmin.user }}
    - mode: "0640"
    - show_changes: False
    - check_cmd: {{ W.php_bin }} -l
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-postfixadmin-user
    - require_in:
      - service: mailfleet-php-fpm
{%-   endfor %}

mailfleet-postfixadmin-templates-cache:
  file.directory:
    - name: {{ W.postfixadmin_templates_c }}
    - user: {{ apps.postfixadmin.user }}
    - group: root
    - mode: "0700"
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-postfixadmin-user

{%-   for admin, hash in (pfa.get("admins") or {}).items() %}
mailfleet-postfixadmin-admin-{{ admin }}:
  mailfleet_webmail.admin:
    - name: {{ admin | json }}
    - password: {{ hash | json }}
    - database: {{ mf.db.name }}
    - require:
      - mailfleet_db: mailfleet-database
{%-   endfor %}
{%- endif %}
