{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
{{ sysrc(L, "nginx") }}

{%- if L.nginx_replace_main_conf %}
{#- FreeBSD's stock nginx.conf serves its own site on :80 and reads no conf.d/: replace it
    with one that only includes the sites this formula writes. #}
mailfleet-nginx-main-conf:
  file.managed:
    - name: {{ L.nginx_main_conf }}
    - mode: "0644"
    - require:
      - pkg: mailfleet-packages
    - watch_in:
      - service: mailfleet-nginx
    - onchanges_in:
      - cmd: mailfleet-nginx-config-ok
    - contents: |
        # Managed by mailfleet (mail.nginx): sites live in {{ L.nginx_site.rsplit("/", 1)[0] }}/.
        worker_processes auto;
        events {
            worker_connections 1024;
        }
        http {
            include mime.types;
            default_type application/octet-stream;
            sendfile on;
            keepalive_timeout 65;
            include {{ L.nginx_site.rsplit("/", 1)[0] }}/*.conf;
        }
{%- endif %}

{%- if L.nginx_default_site %}
mailfleet-nginx-no-default-site:
  file.absent:
    - name: {{ L.nginx_default_site }}
    - watch_in:
      - service: mailfleet-nginx
{%- endif %}

{#- `nginx -t` of the live configuration with a candidate file in place (Salt's check_cmd):
    every site file of the formula passes it before it replaces the live one. #}
mailfleet-nginx-check-script:
  file.managed:
    - name: {{ L.sbin }}/mailfleet-nginx-check
    - source: salt://mail/files/mailfleet-nginx-check.sh
    - mode: "0755"

{#- Location snippets inside the HTTPS server (mail.tls's site includes them). #}
mailfleet-nginx-tls-snippets:
  file.directory:
    - name: {{ L.nginx_site.rsplit("/", 2)[0] }}/mailfleet-tls.d
    - mode: "0755"
    - require:
      - pkg: mailfleet-packages
