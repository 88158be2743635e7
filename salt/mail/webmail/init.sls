{#- Roundcube (webmail) and PostfixAdmin 3.3 (admin panel), each optional per host:
    mailfleet:webmail:enabled, mailfleet:postfixadmin:enabled (settings: mailfleet_settings_check,
    checked by mail.validate). Both are location blocks inside the host's HTTPS server
    (mail.tls, ACME certificate), each on its own php-fpm pool running as its own user.

    Components: php_fpm (packages, application users, pools, the service), roundcube and
    postfixadmin (databases, accounts, configuration), nginx (the locations). An application
    switched off is removed by mail.webmail.clean (its nginx locations, php-fpm pool and
    database account; config files, databases and packages stay). #}
{%- from "mail/webmail/map.jinja" import apps, any_on with context %}
include:
  - mail.webmail.clean
{%- if any_on %}
  - mail.webmail.php_fpm
{%-   for app, a in apps.items() if a.on %}
  - mail.webmail.{{ app }}
{%-   endfor %}
  - mail.webmail.nginx
{%- endif %}
