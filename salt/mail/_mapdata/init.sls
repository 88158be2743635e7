{#- The merged settings of this host (salt/mail/map.jinja: defaults < os_family < osfinger
    < pillar), dumped for review: `salt <host> state.apply mail._mapdata`, then read
    <cachedir>/mailfleet/mapdata.yaml. Secrets are masked (mailfleet_config.mapdata), and
    the file is 0600 anyway. tests/unit/mapdata/ holds the dumps per platform that the render
    test compares, so a change of a default shows in review. #}
{%- from "mail/map.jinja" import mf with context %}
mailfleet-mapdata-dump:
  file.managed:
    - name: {{ (opts["cachedir"] ~ "/mailfleet/mapdata.yaml") | json }}
    - makedirs: True
    - mode: "0600"
    - contents: {{ salt["mailfleet_config.mapdata"](mf) | json }}
