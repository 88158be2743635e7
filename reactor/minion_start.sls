{#- A minion (re)started: make its ban sets contain the ledger's bans (level-triggered
    catch-up for a host that was down or cut off). Only the starting minion is targeted. #}
{%- set mid = data.get("id") %}
{%- if mid is string and mid %}
mailfleet_bans_reconcile:
  local.mailfleet_ban.reconcile:
    - tgt: [{{ mid | tojson }}]
    - tgt_type: list    {#- exactly that id, even if it holds glob characters #}
{%- endif %}
