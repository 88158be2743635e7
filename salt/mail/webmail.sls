{#- Roundcube (webmail) and PostfixAdmin 3.3 (admin panel), each optional per host:
    mailfleet:webmail:enabled, mailfleet:postfixadmin:enabled (see _modules/mailfleet_webmail.py).
    Both are location blocks inside the host's HTTPS server (mail.tls, ACME certificate), each
    on its own php-fpm pool running as its own user. An application switched off is removed
    (its nginx locations and php-fpm pool; config files, databases and packages stay). #}
{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set web = mf.get("webmail") or {} %}
{%- set pfa = mf.get("postfixadmin") or {} %}
{#- Paths, packages and the PHP version come from parameters/ (os_family, osfinger) and
    mailfleet:lookup, like every other per-OS value. #}
{%- set W = L %}
{%- set php_pool_dir = W.php_fpm_pool_dir %}
{%- set php_service = W.php_fpm_service %}
{%- set php_check = W.php_fpm_check %}
{%- set php_run = W.php_fpm_run_dir %}
{%- set web_user = W.nginx_user %}
{%- set snippets = L.nginx_site.rsplit("/", 2)[0] ~ "/mailfleet-tls.d" %}
{%- set state_dir = "/var/lib/mailfleet-webmail" %}
{%- set apps = {
      "roundcube": {
        "on": web.get("enabled") is sameas true,
        "user": W.roundcube_user,
        "root": W.roundcube_public,
        "packages": W.roundcube_packages,
        "max_children": W.roundcube_max_children, "upload_max": W.roundcube_upload_max},
      "postfixadmin": {
        "on": pfa.get("enabled") is sameas true,
        "user": W.postfixadmin_user,
        "root": W.postfixadmin_public,
        "packages": W.postfixadmin_packages,
        "max_children": W.postfixadmin_max_children, "upload_max": W.postfixadmin_upload_max},
    } %}
{%- set any_on = apps.roundcube.on or apps.postfixadmin.on %}

{%- if any_on %}
include:
  - mail.validate   # mailfleet:webmail / mailfleet:postfixadmin are checked with every other key
  - mail.tls
  - mail.database

mailfleet-webmail-packages:
  pkg.installed:
    - pkgs: {{ ((apps.roundcube.packages if apps.roundcube.on else []) + (apps.postfixadmin.packages if apps.postfixadmin.on else [])) | unique | list | json }}
    - require:
      - mailfleet_config: mailfleet-settings-valid

mailfleet-webmail-state-dir:
  file.directory:
    - name: {{ state_dir }}
    - mode: "0755"
    - require:
      - mailfleet_config: mailfleet-settings-valid

mailfleet-nginx-tls-snippets:
  file.directory:
    - name: {{ snippets }}
    - mode: "0755"
    - require:
      - mailfleet_config: mailfleet-settings-valid

{#- Every candidate file is checked before it replaces the live one: nginx locations with
    `nginx -t` on a copy of the configuration (mailfleet-nginx-check, shared with mail.mtasts),
    php-fpm pools with `php-fpm -t` on a configuration holding only the candidate pool, PHP
    config files with `php -l`. #}
mailfleet-webmail-check-scripts:
  file.managed:
    - names:
      - {{ L.sbin }}/mailfleet-nginx-check:
        - source: salt://mail/files/mailfleet-nginx-check.sh
      - {{ L.sbin }}/mailfleet-php-fpm-check:
        - contents: |
            #!/bin/sh
            # Managed by mailfleet (mail.webmail). mailfleet-php-fpm-check CANDIDATE_POOL
            # `php-fpm -t` of a configuration holding only the candidate pool file.
            set -u
            d=$(mktemp -d /tmp/mailfleet-php-fpm-check.XXXXXX) || exit 2
            trap 'rm -rf "$d"' EXIT
            printf '[global]\nerror_log = %s/log\npid = %s/pid\ninclude = %s\n' "$d" "$d" "$1" > "$d/fpm.conf"
            {{ W.php_fpm_bin }} -t -y "$d/fpm.conf"
    - mode: "0755"
    - require:
      - mailfleet_config: mailfleet-settings-valid
{%- endif %}

{%- for app, a in apps.items() %}
{%-   set socket = php_run ~ "/mailfleet-" ~ app ~ ".sock" %}
{%-   set pool = php_pool_dir ~ "/mailfleet-" ~ app ~ ".conf" %}
{%-   set snippet = snippets ~ "/" ~ app ~ ".conf" %}
{%-   if a.on %}

mailfleet-{{ app }}-user:
  user.present:
    - name: {{ a.user }}
    - system: True
    - home: {{ state_dir }}
    - createhome: False
    - shell: {{ W.nologin }}
    - usergroup: True
    - require:
      - mailfleet_config: mailfleet-settings-valid

mailfleet-{{ app }}-sessions:
  file.directory:
    - name: {{ state_dir }}/sessions-{{ app }}
    - user: {{ a.user }}
    - group: {{ a.user }}
    - mode: "0700"
    - require:
      - user: mailfleet-{{ app }}-user
      - file: mailfleet-webmail-state-dir

mailfleet-{{ app }}-pool:
  file.managed:
    - name: {{ pool }}
    - source: salt://mail/files/php-fpm-pool.conf.jinja
    - template: jinja
    - context:
        app: {{ app }}
        user: {{ a.user }}
        web_user: {{ web_user }}
        socket: {{ socket }}
        session_dir: {{ state_dir }}/sessions-{{ app }}
        max_children: {{ a.max_children }}
        upload_max: {{ a.upload_max }}
    - mode: "0644"
    - check_cmd: {{ L.sbin }}/mailfleet-php-fpm-check
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-{{ app }}-user
      - file: mailfleet-webmail-check-scripts
    - require_in:
      - cmd: mailfleet-php-fpm-config-ok
    - watch_in:
      - service: mailfleet-php-fpm
{%-   else %}

mailfleet-{{ app }}-pool-absent:
  file.absent:
    - name: {{ pool }}
{%-     if any_on %}
    - watch_in:
      - service: mailfleet-php-fpm
{%-     else %}
  cmd.run:
    - name: {{ W.reload_php_fpm }}
    - onchanges:
      - file: mailfleet-{{ app }}-pool-absent
{%-     endif %}

mailfleet-{{ app }}-nginx-absent:
  file.absent:
    - name: {{ snippet }}
{%-     if any_on %}
    - watch_in:
      - service: mailfleet-webmail-nginx-reload
{%-     else %}
  cmd.run:
    - name: nginx -t -q && {{ W.reload_nginx }}
    - onchanges:
      - file: mailfleet-{{ app }}-nginx-absent
{%-     endif %}
{%-   endif %}
{%- endfor %}

{%- if apps.roundcube.on %}
{%-   set rc_db = "roundcube" %}
{%-   set rc_user = "roundcube" %}

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

{#- Switched off, an application keeps no database access (its database itself stays). #}
{%- for app, account in [("roundcube", "roundcube"), ("postfixadmin", "mailfleet_pfadmin")] if not apps[app].on %}

mailfleet-{{ app }}-db-user-absent:
  mailfleet_webmail.db_user_absent:
    - name: {{ account }}
{%- endfor %}

{%- if apps.postfixadmin.on %}
{%-   set pfa_db_user = "mailfleet_pfadmin" %}

mailfleet-postfixadmin-db-user:
  mailfleet_db.user:
    - name: {{ pfa_db_user }}
    - password: {{ pfa.db_password | json }}
    - database: {{ mf.db.name }}
    - privileges: [SELECT, INSERT, UPDATE, DELETE]
    - require:
      - mailfleet_db: mailfleet-database

{#- Debian's config.inc.php require_once's dbconfig.inc.php; config.local.php wins. #}
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

{%- if any_on %}

mailfleet-php-fpm-config-ok:
  cmd.run:
    - name: {{ php_check }}
    - onchanges:
{%-   for app, a in apps.items() if a.on %}
      - file: mailfleet-{{ app }}-pool
{%-   endfor %}

mailfleet-php-fpm:
  service.running:
    - name: {{ php_service }}
    - enable: True
    - reload: True
    - require:
      - cmd: mailfleet-php-fpm-config-ok

{%-   for app, a in apps.items() if a.on %}
mailfleet-{{ app }}-nginx:
  file.managed:
    - name: {{ snippets }}/{{ app }}.conf
    - source: salt://mail/files/nginx-webmail.conf.jinja
    - template: jinja
    - context:
        app: {{ app }}
        root: {{ a.root }}
        socket: {{ php_run }}/mailfleet-{{ app }}.sock
        upload_max: {{ a.upload_max }}
        allow: {{ (pfa.get("allow") or []) | json }}
        setup_open: {{ pfa.get("setup_open") is sameas true }}
    - mode: "0644"
    - check_cmd: {{ L.sbin }}/mailfleet-nginx-check {{ L.get("nginx_main_conf") or "/etc/nginx/nginx.conf" }} {{ snippets }}/{{ app }}.conf
    - require:
      - file: mailfleet-webmail-check-scripts
      - file: mailfleet-nginx-tls-snippets
      - file: mailfleet-nginx-tls-site
      - service: mailfleet-php-fpm
{%-   endfor %}

mailfleet-webmail-nginx-config-ok:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
{%-   for app, a in apps.items() if a.on %}
      - file: mailfleet-{{ app }}-nginx
{%-   endfor %}
{%-   for app, a in apps.items() if not a.on %}
      - file: mailfleet-{{ app }}-nginx-absent
{%-   endfor %}

mailfleet-webmail-nginx-reload:
  service.running:
    - name: nginx
    - reload: True
    - require:
      - cmd: mailfleet-webmail-nginx-config-ok
      - service: mailfleet-nginx-tls-reload
    - watch:
{%-   for app, a in apps.items() if a.on %}
      - file: mailfleet-{{ app }}-nginx
{%-   endfor %}
{%- endif %}
