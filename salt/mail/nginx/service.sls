{#- The first (re)load of a run: the :80 site and the main configuration (mail.tls's ACME
    site watches this state, so certbot finds the challenge webroot served). Later reloads
    in the same run come from mail/nginx/reload.jinja. #}
include:
  - mail.nginx.config

mailfleet-nginx-config-ok:
  cmd.run:
    - name: nginx -t -q
    - onchanges:
      - file: mailfleet-nginx-check-script

mailfleet-nginx:
  service.running:
    - name: nginx
    - enable: True
    - reload: True
    - require:
      - cmd: mailfleet-nginx-config-ok
