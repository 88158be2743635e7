{#- nginx, owned here: its main configuration and default site, the check every site file
    passes before it replaces the live one (mailfleet-nginx-check), the folder of the HTTPS
    server's location snippets, and the service. The sites are written by the components
    that serve them (mail.tls: ACME on :80 and the HTTPS server; mail.mtasts: the MTA-STS
    policies; mail.webmail: Roundcube and PostfixAdmin locations), each reloading nginx
    through mail/nginx/reload.jinja once its files are in place.
    No clean SLS: every mail host serves ACME HTTP-01 challenges. #}
include:
  - mail.nginx.config
  - mail.nginx.service
