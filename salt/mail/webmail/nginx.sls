{#- The applications' locations inside the host's HTTPS server (mail.tls's site includes the
    snippet folder mail.nginx owns), each checked with mailfleet-nginx-check before it
    replaces the live one, then one reload once php-fpm serves their sockets. #}
{%- from "mail/webmail/map.jinja" import W, pfa, apps, any_on, snippets, php_run with context %}
{%- from "mail/nginx/reload.jinja" import nginx_reload %}
{%- if any_on %}
include:
  - mail.nginx
  - mail.tls
  - mail.webmail.php_fpm

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
    - check_cmd: {{ W.sbin }}/mailfleet-nginx-check {{ W.nginx_main_conf }} {{ snippets }}/{{ app }}.conf
    - require:
      - file: mailfleet-nginx-check-script
      - file: mailfleet-nginx-tls-snippets
      - file: mailfleet-nginx-tls-site
      - service: mailfleet-php-fpm
{%-   endfor %}
{%-   set locations = [] %}
{%-   for app, a in apps.items() if a.on %}
{%-     do locations.append("mailfleet-" ~ app ~ "-nginx") %}
{%-   endfor %}
{{ nginx_reload("mailfleet-webmail-nginx-reload", locations, [{"service": "mailfleet-nginx-tls-reload"}]) }}
{%- endif %}
