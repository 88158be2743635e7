{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
mailfleet-packages:
  pkg.installed:
    - pkgs: {{ L.packages | json }}

{%- if L.os == "FreeBSD" %}
{#- The seed's rule: lock postfix and dovecot so `pkg upgrade` never swaps them at 3 a.m. #}
{%- for name in L.locked_packages %}
mailfleet-pkg-lock-{{ name }}:
  cmd.run:
    - name: pkg lock -y {{ name | quote }}
    - unless: pkg lock -l -q | grep -q -- {{ ("^" ~ name ~ "-") | quote }}
    - require:
      - pkg: mailfleet-packages
{%- endfor %}
{%- for key, value in L.rc_conf.items() %}
mailfleet-rc-{{ key }}:
  cmd.run:
    - name: sysrc {{ (key ~ "=" ~ value) | quote }}
    - unless: test "$(sysrc -n {{ key | quote }} 2>/dev/null)" = {{ value | string | quote }}
{%- endfor %}
{%- for key, value in L.get("periodic_conf", {}).items() %}
mailfleet-periodic-{{ key }}:
  cmd.run:
    - name: sysrc -f /etc/periodic.conf {{ (key ~ "=" ~ value) | quote }}
    - unless: test "$(sysrc -f /etc/periodic.conf -n {{ key | quote }} 2>/dev/null)" = {{ value | string | quote }}
{%- endfor %}
{%- endif %}

mailfleet-vmail-group:
  group.present:
    - name: {{ mf.vmail.user }}
    - gid: {{ mf.vmail.gid }}

mailfleet-vmail-user:
  user.present:
    - name: {{ mf.vmail.user }}
    - uid: {{ mf.vmail.uid }}
    - gid: {{ mf.vmail.gid }}
    - home: {{ L.vmail_home }}
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: mailfleet-vmail-group

mailfleet-vmail-home:
  file.directory:
    - name: {{ L.vmail_home }}
    - user: {{ mf.vmail.user }}
    - group: {{ mf.vmail.user }}
    - mode: "0750"
    - require:
      - user: mailfleet-vmail-user

mailfleet-state-dir:
  file.directory:
    - name: /var/lib/mailfleet
    - mode: "0750"
    - makedirs: True
