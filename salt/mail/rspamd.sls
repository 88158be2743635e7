{#- Rspamd on the mail host: Postfix's milter (proxy worker on loopback), DKIM signing of
    authenticated and local mail for the domains whose key the host received by pillar
    (mailfleet:dkim:<domain>: selector, key_type, key; handed out by the mailfleet_domains
    ext_pillar to the serving hosts only), DKIM/SPF/DMARC verification of inbound mail with
    an Authentication-Results header. No Redis: modules that need it are off.
    Every candidate file is checked with `rspamadm configtest` before it replaces the live
    one, and the whole configuration once more before rspamd is reloaded. #}
{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set R = mf.rspamd %}
{%- set dkim_pillar = (pillar.get("mailfleet") or {}).get("dkim") or {} %}
{%- set parts = ["worker-proxy.inc", "worker-normal.inc", "worker-controller.inc", "options.inc",
                 "actions.conf", "dkim_signing.conf", "arc.conf", "milter_headers.conf"] %}
{#- The DKIM pillar is checked by mail.validate (included: it runs first, failhard, naming
    the bad key); while it has a problem no key file is rendered at all. #}
{%- set keys = {} %}
{%- if not salt["mailfleet_config.check"](mf, dkim_pillar)["problems"] %}
{%-   for domain, entry in dkim_pillar | dictsort %}
{%-     do keys.update({domain | lower: {"selector": entry.selector | lower,
                                         "path": L.rspamd_dkim_dir ~ "/" ~ (domain | lower) ~ "." ~ (entry.selector | lower) ~ ".key",
                                         "pillar": "mailfleet:dkim:" ~ domain ~ ":key"}}) %}
{%-   endfor %}
{%- endif %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.validate
  - mail.packages
{{ sysrc(L, "rspamd") }}

mailfleet-rspamd-package:
  pkg.installed:
    - name: {{ L.rspamd_package }}

mailfleet-rspamd-check-script:
  file.managed:
    - name: {{ L.sbin }}/mailfleet-rspamd-check
    - source: salt://mail/files/mailfleet-rspamd-check.sh
    - mode: "0755"

{%- for part in parts %}
mailfleet-rspamd-{{ part }}:
  file.managed:
    - name: {{ L.rspamd_dir }}/local.d/{{ part }}
    - source: salt://mail/files/rspamd-local.conf.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        part: {{ part }}
    - mode: "0644"
    - check_cmd: {{ L.sbin }}/mailfleet-rspamd-check {{ L.rspamd_dir }} local.d/{{ part }}
    - require:
      - pkg: mailfleet-rspamd-package
      - file: mailfleet-rspamd-check-script
    - onchanges_in:
      - cmd: mailfleet-rspamd-configtest
{%- endfor %}

{%- for module in R.disabled_modules %}
mailfleet-rspamd-off-{{ module }}:
  file.managed:
    - name: {{ L.rspamd_dir }}/local.d/{{ module }}.conf
    - source: salt://mail/files/rspamd-module-disabled.conf
    - mode: "0644"
    - require:
      - pkg: mailfleet-rspamd-package
    - onchanges_in:
      - cmd: mailfleet-rspamd-configtest
{%- endfor %}

{#- DKIM keys: a folder only root and the rspamd group can enter, one file per domain and
    selector, 0640 root:<rspamd group>; keys of domains this host no longer signs for are
    removed (clean). The key reaches the file from pillar at run time (contents_pillar):
    it is not part of the state's arguments, and show_changes is off. #}
mailfleet-rspamd-dkim-dir:
  file.directory:
    - name: {{ L.rspamd_dkim_dir }}
    - user: root
    - group: {{ L.rspamd_group }}
    - mode: "0750"
    - makedirs: True
    - require:
      - pkg: mailfleet-rspamd-package

{%- for domain, k in keys | dictsort %}
mailfleet-rspamd-dkim-key-{{ domain }}:
  file.managed:
    - name: {{ k.path }}
    - contents_pillar: {{ k.pillar }}
    - user: root
    - group: {{ L.rspamd_group }}
    - mode: "0640"
    - show_changes: False
    - require:
      - file: mailfleet-rspamd-dkim-dir
    - require_in:
      - file: mailfleet-rspamd-dkim-clean
    - watch_in:
      - service: mailfleet-rspamd
{%- endfor %}

{#- No require on mailfleet-rspamd-dkim-dir (the same folder): clean would keep everything
    under a required folder. Definition order runs it after that state. #}
mailfleet-rspamd-dkim-clean:
  file.directory:
    - name: {{ L.rspamd_dkim_dir }}
    - user: root
    - group: {{ L.rspamd_group }}
    - mode: "0750"
    - clean: True
    - watch_in:
      - service: mailfleet-rspamd

{#- Maps: domain -> selector, domain -> key path (try_fallback off: only these are signed).
    They need their keys in place first; rspamd is reloaded when they change. #}
{%- set selector_lines, path_lines = [], [] %}
{%- for domain, k in keys | dictsort %}
{%-   do selector_lines.append(domain ~ " " ~ k.selector) %}
{%-   do path_lines.append(domain ~ " " ~ k.path) %}
{%- endfor %}
{%- for name, lines in (("dkim_selectors.map", selector_lines), ("dkim_paths.map", path_lines)) %}
mailfleet-rspamd-dkim-map-{{ name }}:
  file.managed:
    - name: {{ L.rspamd_dir }}/mailfleet/{{ name }}
    - contents: {{ (["# Managed by mailfleet (mail.rspamd) from pillar mailfleet:dkim."] + lines) | join("\n") | json }}
    - makedirs: True
    - mode: "0644"
    - require:
      - file: mailfleet-rspamd-dkim-clean
    - watch_in:
      - service: mailfleet-rspamd
{%- endfor %}

{#- The whole configuration once more, as rspamd will load it, before a reload. #}
mailfleet-rspamd-configtest:
  cmd.run:
    - name: rspamadm configtest
    - require_in:
      - service: mailfleet-rspamd

mailfleet-rspamd:
  service.running:
    - name: {{ L.rspamd_service }}
    - enable: True
    - reload: True
    - require:
      - pkg: mailfleet-rspamd-package
    - watch:
      - cmd: mailfleet-rspamd-configtest
