{#- What an application switched off leaves behind is removed: its nginx locations, its
    php-fpm pool and its database account (it keeps no access). Its config files, database
    and packages stay: switching it on again finds its data. Each removal reloads what
    served it, by itself, so this SLS also runs alone. #}
{%- from "mail/webmail/map.jinja" import W, apps, snippets with context %}
{%- for app, a in apps.items() if not a.on %}

mailfleet-{{ app }}-pool-absent:
  file.absent:
    - name: {{ W.php_fpm_pool_dir }}/mailfleet-{{ app }}.conf
  cmd.run:
    - name: {{ W.reload_php_fpm }}
    - onchanges:
      - file: mailfleet-{{ app }}-pool-absent

mailfleet-{{ app }}-nginx-absent:
  file.absent:
    - name: {{ snippets }}/{{ app }}.conf
  cmd.run:
    - name: nginx -t -q && {{ W.reload_nginx }}
    - onchanges:
      - file: mailfleet-{{ app }}-nginx-absent

mailfleet-{{ app }}-db-user-absent:
  mailfleet_webmail.db_user_absent:
    - name: {{ a.db_account }}
{%- endfor %}
