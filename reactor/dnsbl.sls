{#- mailfleet/dnsbl/transition from a mail host's mailfleet_watch engine (a sending IP of
    that host became listed, cleared or unknown on a DNSBL zone). Thin on purpose: the raw
    event goes to the runner, which validates it (the sending minion is data["id"], set by
    Salt; the event's own "host" must match it and every IP must be one of that host's),
    decides (relay through a clean peer, hold, restore), records and alerts. #}
mailfleet_dnsbl_transition:
  runner.mailfleet_reroute.dnsbl:
    - args:
      - minion: {{ data.get("id") | tojson }}
      - payload: {{ data.get("data") | tojson }}
