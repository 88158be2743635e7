{#- Issue 6, the ban path on a mail host:
    - the mailfleet_watch engine (long-running, in the minion) follows the mail log and
      sends ONE aggregated mailfleet/abuse/report event per interval to the master;
    - the ban sets are reconciled with the master's ledger (pillar mailfleet_bans) at each
      state run and on a schedule with splay, so a host that was cut off catches up.
    Pillar mailfleet:defense (defaults below):
      log: /var/log/mail.log   interval: 0.5 (s between reports)   poll: 0.1 (s between reads)
      max_ips: 500 (offenders per report; the rest waits for the next)
      thresholds: {relay: {count: 3, window: 600}, auth: {count: 10, window: 600}, ...}
                  (merged over mailfleet_maillog.DEFAULT_THRESHOLDS, checked there;
                  outbound: {messages: 200, recipients: 500, window: 3600} per SASL user,
                  past it the account is held: _runners/mailfleet_accounts.py)
      queue: {deferred: 200, age: 14400, interval: 60, repeat: 3600} (engine queue thread,
             _modules/mailfleet_queue.py; queue: null turns it off)
      reconcile_every: 300, reconcile_splay: 60 (seconds)
    Pillar mailfleet:dnsbl (the engine's DNSBL thread, _modules/mailfleet_dnsbl.py):
      zones (default Spamhaus ZEN, SpamCop, Barracuda), interval 300, timeout 5, resolvers,
      ips, dqs_key; enabled: false turns the checks off. The file holds the DQS key: 0600. #}
{%- from "mail/map.jinja" import mf with context %}
{%- set d = salt["slsutil.merge"]({"log": "/var/log/mail.log", "interval": 0.5, "poll": 0.1,
                                   "max_ips": 500, "thresholds": {},
                                   "reconcile_every": 300, "reconcile_splay": 60},
                                  salt["pillar.get"]("mailfleet:defense", {}), strategy="recurse") %}
{%- set conf_dir = salt["file.dirname"](opts["conf_file"]) ~ "/minion.d" %}
{%- set dnsbl = salt["pillar.get"]("mailfleet:dnsbl", {}) %}
{%- set dnsbl = {} if dnsbl is none else dnsbl %}
{#- The engine's certificate thread (_modules/mailfleet_certwatch.py): pillar
    mailfleet:defense:cert_* (threshold_days 21, interval 3600, repeat 86400, lineages
    [myhostname], ports {25: starttls, 587: starttls, 993: tls}); cert_watch: false turns it off. #}
{%- set certs = {"lineages": [mf.host.myhostname], "live_dir": mf.lookup.letsencrypt_dir ~ "/live"} %}
{%- for k, v in d.items() if k.startswith("cert_") and k != "cert_watch" %}
{%-   do certs.update({k[5:]: v}) %}
{%- endfor %}
{%- if "mailfleet_certwatch.settings" in salt %}
{%-   do salt["mailfleet_certwatch.settings"](certs, mf.host.myhostname) %}{#- bad pillar: error naming the key #}
{%- endif %}
include:
  - mail.firewall

mailfleet-defense-engine-conf:
  file.managed:
    - name: {{ conf_dir }}/mailfleet-defense.conf
    - mode: "0600"
    - contents: |
        # Managed by mailfleet (salt/mail/defense.sls, pillar mailfleet:defense).
        engines:
          - mailfleet_watch:
              log: {{ d.log | tojson }}
              interval: {{ d.interval | float }}
              poll: {{ d.poll | float }}
              max_ips: {{ d.max_ips | int }}
              thresholds: {{ d.thresholds | tojson }}
{%- if d.get("queue", {}) is not none %}
              queue: {{ salt["mailfleet_queue.queue_settings"](d.get("queue", {})) | tojson if "mailfleet_queue.queue_settings" in salt else (d.get("queue", {}) | tojson) }}
{%- endif %}
{%- if dnsbl.get("enabled", True) %}
              dnsbl: {{ dnsbl | tojson }}
{%- endif %}
{%- if d.get("cert_watch", True) %}
              certs: {{ certs | tojson }}
{%- endif %}

{#- The engine config is read at minion start. Restart it only when the file changed, and
    in the background after this run has returned (the documented pattern: cmd.run with
    bg; systemd's --no-block so the restart does not wait for the job that asked for it). #}
mailfleet-defense-minion-restart:
  cmd.run:
{%- if grains.get("os_family") == "FreeBSD" %}
    - name: sleep 5; service salt_minion restart
{%- else %}
    - name: sleep 5; systemctl restart --no-block salt-minion
{%- endif %}
    - bg: True
    - onchanges:
      - file: mailfleet-defense-engine-conf

{#- pf (FreeBSD): the ban table is not reconciled yet (rendered, not run). #}
{%- if mf.lookup.firewall == "nftables" %}
mailfleet-bans-reconciled:
  mailfleet_ban.reconciled:
    - name: mailfleet
    - require:
      - cmd: mailfleet-nftables-present

mailfleet-bans-reconcile-schedule:
  schedule.present:
    - name: mailfleet_bans_reconcile
    - function: mailfleet_ban.reconcile
    - seconds: {{ d.reconcile_every | int }}
    - splay: {{ d.reconcile_splay | int }}
    - return_job: False
{%- endif %}
