{#- php-fpm for the applications switched on: their packages, one system user and one pool
    per application (its own socket, sessions and limits), checked with `php-fpm -t` on a
    configuration holding only the candidate pool before it replaces the live one. #}
{%- from "mail/webmail/map.jinja" import W, apps, any_on, state_dir, php_run with context %}
{%- if any_on %}
include:
  - mail.validate   # mailfleet:webmail / mailfleet:postfixadmin are checked with every other key

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

mailfleet-php-fpm-check-script:
  file.managed:
    - name: {{ W.sbin }}/mailfleet-php-fpm-check
    - mode: "0755"
    - contents: |
        #!/bin/sh
        # Managed by mailfleet (mail.webmail.php_fpm). mailfleet-php-fpm-check CANDIDATE_POOL
        # `php-fpm -t` of a configuration holding only the candidate pool file.
        set -u
        d=$(mktemp -d /tmp/mailfleet-php-fpm-check.XXXXXX) || exit 2
        trap 'rm -rf "$d"' EXIT
        printf '[global]\nerror_log = %s/log\npid = %s/pid\ninclude = %s\n' "$d" "$d" "$1" > "$d/fpm.conf"
        {{ W.php_fpm_bin }} -t -y "$d/fpm.conf"
    - require:
      - mailfleet_config: mailfleet-settings-valid

{%-   for app, a in apps.items() if a.on %}

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
    - name: {{ W.php_fpm_pool_dir }}/mailfleet-{{ app }}.conf
    - source: salt://mail/files/php-fpm-pool.conf.jinja
    - template: jinja
    - context:
        app: {{ app }}
        user: {{ a.user }}
        web_user: {{ W.nginx_user }}
        socket: {{ php_run }}/mailfleet-{{ app }}.sock
        session_dir: {{ state_dir }}/sessions-{{ app }}
        max_children: {{ a.max_children }}
        upload_max: {{ a.upload_max }}
    - mode: "0644"
    - check_cmd: {{ W.sbin }}/mailfleet-php-fpm-check
    - require:
      - pkg: mailfleet-webmail-packages
      - user: mailfleet-{{ app }}-user
      - file: mailfleet-php-fpm-check-script
    - onchanges_in:
      - cmd: mailfleet-php-fpm-config-ok
    - watch_in:
      - service: mailfleet-php-fpm
{%-   endfor %}

mailfleet-php-fpm-config-ok:
  cmd.run:
    - name: {{ W.php_fpm_check }}
    - onchanges:
      - file: mailfleet-php-fpm-check-script

mailfleet-php-fpm:
  service.running:
    - name: {{ W.php_fpm_service }}
    - enable: True
    - reload: True
    - require:
      - cmd: mailfleet-php-fpm-config-ok
{%- endif %}
