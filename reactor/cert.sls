{#- mailfleet/cert/problem from a mail host's mailfleet_watch engine (a certificate lineage of
    that host is expiring, missing, or served stale on 25/587/993). Thin on purpose: the raw
    event goes to the runner, which validates it (the sending minion is data["id"], set by
    Salt; the event's "host" must match it, the lineage must be one of that host's), applies
    the cooldown, renews/reloads, re-probes, records in the ledger and alerts. #}
mailfleet_cert_problem:
  runner.mailfleet_certs.problem:
    - args:
      - minion: {{ data.get("id") | tojson }}
      - payload: {{ data.get("data") | tojson }}
