{%- from "mail/map.jinja" import mf with context %}
mailfleet-settings-valid:
  mailfleet_config.valid:
    - config: {{ mf | json }}
    - failhard: True
    - order: 1
