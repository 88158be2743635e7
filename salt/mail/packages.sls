{#- The packages of the mail host, and nothing else (each component sets up its own users,
    directories and rc.conf knobs). #}
{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
mailfleet-packages:
  pkg.installed:
    - pkgs: {{ L.packages | json }}

{%- if L.os == "FreeBSD" %}
{#- Lock postfix and dovecot so `pkg upgrade` never swaps them at 3 a.m. #}
{%- for name in L.locked_packages %}
mailfleet-pkg-lock-{{ name }}:
  cmd.run:
    - name: pkg lock -y {{ name | quote }}
    - unless: pkg lock -l -q | grep -q -- {{ ("^" ~ name ~ "-") | quote }}
    - require:
      - pkg: mailfleet-packages
{%- endfor %}
{%- endif %}
