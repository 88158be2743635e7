{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set names = [mf.host.myhostname] + mf.tls.extra_names %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
{{ sysrc(L, "tls") }}

{#- nginx on 80: ACME HTTP-01 challenges from a webroot; everything else goes to HTTPS. #}
mailfleet-acme-webroot:
  file.directory:
    - name: {{ L.acme_webroot }}
    - mode: "0755"
    - makedirs: True

{%- if L.get("nginx_main_conf") %}
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
    - require_in:
      - cmd: mailfleet-nginx-config-ok
    - contents: |
        # Managed by mailfleet (mail.tls): sites live in {{ L.nginx_site.rsplit("/", 1)[0] }}/.
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

mailfleet-nginx-site:
  file.managed:
    - name: {{ L.nginx_site }}
    - source: salt://mail/files/nginx-mailfleet.conf.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        part: acme
    - mode: "0644"
    - require:
      - pkg: mailfleet-packages

mailfleet-nginx-config-ok:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: mailfleet-nginx-site

mailfleet-nginx:
  service.running:
    - name: nginx
    - enable: True
    - reload: True
    - require:
      - cmd: mailfleet-nginx-config-ok
    - watch:
      - file: mailfleet-nginx-site

{#- certbot renews on its own timer; the deploy hook reloads whatever serves the cert. #}
mailfleet-certbot-deploy-hook:
  file.managed:
    - name: {{ L.letsencrypt_dir }}/renewal-hooks/deploy/50-mailfleet-reload
    - mode: "0755"
    - makedirs: True
    - contents: |
        #!/bin/sh
        # mailfleet: a renewed certificate is served at once (RENEWED_LINEAGE from certbot).
        {%- if L.os == "FreeBSD" %}
        for s in postfix dovecot nginx; do service "$s" reload 2>/dev/null; done; true
        {%- else %}
        systemctl reload postfix dovecot nginx 2>/dev/null || true
        {%- endif %}

mailfleet-certificate:
  cmd.run:
    {#- every argument shell-quoted: pillar text never reaches a shell unquoted #}
    {%- set chain = (mf.cert_dir ~ "/fullchain.pem") | quote %}
    - name: >-
        certbot certonly --non-interactive --agree-tos --keep-until-expiring
        --no-random-sleep-on-renew --webroot -w {{ L.acme_webroot | quote }}
        --server {{ mf.tls.acme_server | quote }} -m {{ mf.tls.contact | quote }}
        --cert-name {{ mf.host.myhostname | quote }}
        {%- for name in names %} -d {{ name | quote }}{% endfor %}
    - unless: >-
        test -s {{ chain }} &&
        openssl x509 -in {{ chain }} -noout -checkend 2592000 >/dev/null
        {%- for name in names %} && openssl x509 -in {{ chain }} -noout -ext subjectAltName | grep -qE -- {{ ("DNS:" ~ (name | regex_escape) ~ "([,[:space:]]|$)") | quote }}{% endfor %}
    - require:
      - service: mailfleet-nginx
      - file: mailfleet-acme-webroot
      - file: mailfleet-certbot-deploy-hook

{#- Renewal: certbot's systemd timer on Debian; on FreeBSD the periodic(8) job that
    weekly_certbot_enable (mail.packages, /etc/periodic.conf) turns on. #}
{%- if L.os != "FreeBSD" %}
mailfleet-certbot-timer:
  service.running:
    - name: certbot.timer
    - enable: True
    - require:
      - cmd: mailfleet-certificate
{%- endif %}

{#- HTTPS only once the certificate exists (same run): later issues add sites here. #}
mailfleet-nginx-tls-site:
  file.managed:
    - name: {{ L.nginx_site | replace("mailfleet.conf", "mailfleet-tls.conf") }}
    - source: salt://mail/files/nginx-mailfleet.conf.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        part: tls
    - mode: "0644"
    - require:
      - cmd: mailfleet-certificate

mailfleet-nginx-tls-config-ok:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: mailfleet-nginx-tls-site

mailfleet-nginx-tls-reload:
  service.running:
    - name: nginx
    - reload: True
    - require:
      - cmd: mailfleet-nginx-tls-config-ok
    - watch:
      - file: mailfleet-nginx-tls-site
