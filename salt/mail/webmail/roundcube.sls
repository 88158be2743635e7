{#- Roundcube (mailfleet:webmail): its own database and least-privilege account, its
    configuration (IMAPS and submission on this host, checked with `php -l`), its temp dir. #}
{%- from "mail/map.jinja" import mf with context %}
{%- from "mail/webmail/map.jinja" import W, web, apps with context %}
{%- if apps.roundcube.on %}
{%-   set rc_db = "roundcube" %}
{%-   set rc_user = apps.roundcube.db_account %}
include:
  - mail.database
  - mail.webmail.php_fpm

mailfleet-roundcube-database:
  mailfleet_db.database:
    - name: {{ rc_db }}
    - schema: {{ W.roundcube_schema }}
    - require:
      - service: mailfleet-mariadb
      - pkg: mailfleet-webmail-packages

mailfleet-roundcube-db-user:
  mailfleet_db.user:
    - name: {{ rc_user }}
    - password: {{ web.db_password | json }}
    - database: {{ rc_db }}
    - privileges: [SELECT, INSERT, UPDATE, DELETE]
    - require:
      - mailfleet_db: mailfleet-roundcube-database

mailfleet-roundcube-config:
  file.managed:
    - name: {{ W.roundcube_config }}
    - source: salt://mail/files/roundcube-config.inc.php.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        web: {{ web | json }}
        db_user: {{ rc_user }}
        db_name: {{ rc_db }}
        temp_dir: {{ W.roundcube_temp }}
        upload_max: {{ apps.roundcube.upload_max }}
    - user: root
    - group: {{ apps.roundcube.user }}
    - mode: "0640"
    - show_changes: False
    - check_cmd: {{ W.php_bin }} -l
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-roundcube-user
      - mailfleet_db: mailfleet-roundcube-db-user
    - require_in:
      - service: mailfleet-php-fpm

mailfleet-roundcube-temp:
  file.directory:
    - name: {{ W.roundcube_temp }}
    - user: {{ apps.roundcube.user }}
    - group: {{ apps.roundcube.user }}
    - mode: "0750"
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-roundcube-user
{%- endif %}
