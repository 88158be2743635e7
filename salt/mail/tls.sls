{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set names = [mf.host.myhostname] + mf.tls.extra_names %}
{%- from "mail/nginx/reload.jinja" import nginx_reload %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
  - mail.nginx
{{ sysrc(L, "tls") }}

{#- nginx on 80: ACME HTTP-01 challenges from a webroot; everything else goes to HTTPS. #}
mailfleet-acme-webroot:
  file.directory:
    - name: {{ L.acme_webroot }}
    - mode: "0755"
    - makedirs: True

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
    - onchanges_in:
      - cmd: mailfleet-nginx-config-ok
    - watch_in:
      - service: mailfleet-nginx

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
      - file: mailfleet-nginx-tls-snippets
{{ nginx_reload("mailfleet-nginx-tls-reload", ["mailfleet-nginx-tls-site"]) }}
