{#- mailfleet/abuse/report from a mail host's mailfleet_watch engine. Thin on purpose: the
    raw event goes to the runner, which validates it (the sending minion is data["id"], set
    by Salt; the report's own "host" must match it), decides, records and bans. tojson keeps
    minion-written text from becoming YAML. #}
mailfleet_abuse_report:
  runner.mailfleet_defense.report:
    - args:
      - minion: {{ data.get("id") | tojson }}
      - payload: {{ data.get("data") | tojson }}
