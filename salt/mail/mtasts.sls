{#- MTA-STS (RFC 8461): the policy of every served domain whose pillar has dns:mta_sts,
    served over HTTPS at https://mta-sts.<domain>/.well-known/mta-sts.txt by this host's
    nginx, each name with its own ACME certificate (certbot lineage mta-sts.<domain>).

    The policy text comes from mailfleet_dnsrecords.mta_sts_policy, the function whose
    output the master's mailfleet_dns runner hashes into the published `_mta-sts` TXT id,
    so the id changes exactly when this file does. The runner also publishes the A/AAAA
    records of mta-sts.<domain> (the serving hosts' addresses); the certificate is ordered
    once they point here (before that the state says so and waits: publish, then apply).
    Kept apart from mail.tls and its nginx sites (own site file); nginx itself is mail.nginx's. #}
{%- from "mail/map.jinja" import mf with context %}
{%- from "mail/nginx/reload.jinja" import nginx_reload %}
{%- set L = mf.lookup %}
{%- set live_dir = L.letsencrypt_dir ~ "/live" %}
{%- set webroot = L.acme_webroot.rsplit("/", 1)[0] ~ "/mta-sts" %}
{%- set main_conf = L.nginx_main_conf %}
{%- set site = L.nginx_site | replace("mailfleet.conf", "mailfleet-mta-sts.conf") %}
{%- set addresses = [] %}
{%- for ip in (grains.get("ipv4", []) + grains.get("ipv6", [])) %}
{%-   if not (ip.startswith("127.") or ip.startswith("169.254.") or ip == "::1" or ip.lower().startswith("fe80:")) %}
{%-     do addresses.append(ip) %}
{%-   endif %}
{%- endfor %}
{#- mailfleet:domains is read from the render context (see map.jinja: no pillar.get copy of a
    100,000-mailbox pillar); only hosts and dns:mta_sts are passed on. #}
{%- set served = pillar.get("mailfleet", {}).get("domains", {}) %}
{%- set policies = {} %}
{%- for domain, data in served | dictsort %}
{%-   set dns = (data or {}).get("dns") or {} %}
{#-   The settings are checked by mail.validate (included: it runs first, failhard, naming
      the bad key); a domain with a problem gets no policy. The name becomes a path below
      the webroot: one that could leave it is never used (the ext_pillar refuses any name
      that is not a domain name; this is the second line). #}
{%-   if dns is mapping and dns.get("mta_sts") and not ("/" in domain or domain.startswith(".") or "\n" in domain) %}
{%-     set res = salt["mailfleet_dnsrecords.mta_sts_policy"](domain, {"hosts": data.get("hosts"), "dns": {"mta_sts": dns.get("mta_sts")}}) %}
{%-     if not res.problems %}
{%-       do policies.update({domain | lower: res.policy}) %}
{%-     endif %}
{%-   endif %}
{%- endfor %}
include:
  - mail.validate
  - mail.tls

mailfleet-mta-sts-scripts:
  file.managed:
    - name: {{ L.sbin }}/mailfleet-mta-sts-cert
    - source: salt://mail/files/mailfleet-mta-sts-cert.sh
    - mode: "0755"

{%- for domain, policy in policies | dictsort %}
mailfleet-mta-sts-policy-{{ domain }}:
  file.managed:
    - name: {{ webroot }}/{{ domain }}/.well-known/mta-sts.txt
    {#- a template keeps the CRLF line ends (RFC 8461 3.2); contents: would turn them into LF #}
    - source: salt://mail/files/mta-sts.txt.jinja
    - template: jinja
    - context:
        policy: {{ policy | json }}
    - mode: "0644"
    - makedirs: True
    - require_in:
      - file: mailfleet-mta-sts-webroot

mailfleet-mta-sts-cert-{{ domain }}:
  cmd.run:
    {#- every argument shell-quoted: pillar text never reaches a shell unquoted #}
    {%- set cert = live_dir ~ "/mta-sts." ~ domain ~ "/fullchain.pem" %}
    - name: >-
        {{ (L.sbin ~ "/mailfleet-mta-sts-cert") | quote }} {{ ("mta-sts." ~ domain) | quote }} {{ live_dir | quote }}
        {{ L.acme_webroot | quote }} {{ mf.tls.acme_server | quote }} {{ mf.tls.contact | quote }}
        {%- for ip in addresses %} {{ ip | quote }}{% endfor %}
    - stateful: True
    {#- test=True and later runs: nothing to do while the certificate is good #}
    - unless: >-
        test -s {{ cert | quote }} &&
        openssl x509 -in {{ cert | quote }} -noout -checkend 2592000 >/dev/null
    - require:
      - file: mailfleet-mta-sts-scripts
      - file: mailfleet-mta-sts-policy-{{ domain }}
      - service: mailfleet-nginx
      - file: mailfleet-certbot-deploy-hook
    - require_in:
      - file: mailfleet-mta-sts-site
{%- endfor %}

{#- Policies of domains no longer served (or without dns:mta_sts) are removed. #}
mailfleet-mta-sts-webroot:
  file.directory:
    - name: {{ webroot }}
    - mode: "0755"
    - makedirs: True
    - clean: True

mailfleet-mta-sts-site:
  file.managed:
    - name: {{ site }}
    - source: salt://mail/files/nginx-mta-sts.conf.jinja
    - template: jinja
    - context:
        domains: {{ policies | list | sort | json }}
        live_dir: {{ live_dir }}
        webroot: {{ webroot }}
    - mode: "0644"
    - check_cmd: {{ L.sbin }}/mailfleet-nginx-check {{ main_conf }} {{ site }}
    - require:
      - file: mailfleet-nginx-check-script
      - file: mailfleet-mta-sts-webroot
{{ nginx_reload("mailfleet-mta-sts-nginx-reload", ["mailfleet-mta-sts-site"]) }}
