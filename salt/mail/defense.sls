{#- Issue 6, the ban path on a mail host:
    - the mailfleet_watch engine (long-running, in the minion) follows the mail log and
      sends ONE aggregated mailfleet/abuse/report event per interval to the master;
    - the ban sets are reconciled with the master's ledger (pillar mailfleet_bans) at each
      state run and on a schedule with splay, so a host that was cut off catches up.
    Pillar mailfleet:defense (defaults below):
      log: /var/log/mail.log   interval: 0.5 (s between reports)   poll: 0.1 (s between reads)
      max_ips: 500 (offenders per report; the rest waits for the next)
      thresholds: {relay: {count: 3, window: 600}, auth: {count: 10, window: 600}, ...}
                  (merged over mailfleet_logcount.DEFAULT_THRESHOLDS, checked there;
                  outbound: {messages: 200, recipients: 500, window: 3600} per SASL user,
                  past it the account is held: _runners/mailfleet_accounts.py)
      queue: {deferred: 200, age: 14400, interval: 60, repeat: 3600} (engine queue thread,
             _utils/mailfleet_postqueue.py; queue: null turns it off)
      reconcile_every: 300, reconcile_splay: 60 (seconds)
    Pillar mailfleet:dnsbl (the engine's DNSBL thread, _utils/mailfleet_dnsbl_lookup.py):
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
{#- The engine's certificate thread (_utils/mailfleet_certcheck.py): pillar
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

{#- The detector (_utils/mailfleet_watch.py) runs under the minion's stock `script` engine
    (stanza in config/minion.d/mailfleet.conf): this run writes its launcher and settings and
    waits until it runs them. No minion restart, ever: settings are reloaded in place, a code
    change restarts only the detector (issue 12). #}
{%- set watch_dir = mf.lookup.watch_dir %}
{%- set settings = {"host": grains["id"], "log": d.log, "interval": d.interval | float,
                    "poll": d.poll | float, "max_ips": d.max_ips | int, "thresholds": d.thresholds,
                    "state_file": opts["cachedir"] ~ "/mailfleet_watch.state",
                    "queue": none, "dnsbl": none, "certs": none} %}
{%- if d.get("queue", {}) is not none %}
{%-   do settings.update({"queue": salt["mailfleet_queue.queue_settings"](d.get("queue", {})) if "mailfleet_queue.queue_settings" in salt else d.get("queue", {})}) %}
{%- endif %}
{%- if dnsbl.get("enabled", True) %}
{%-   do settings.update({"dnsbl": dnsbl}) %}
{%- endif %}
{%- if d.get("cert_watch", True) %}
{%-   do settings.update({"certs": certs}) %}
{%- endif %}
mailfleet-watch-launcher:
  file.managed:
    - name: {{ watch_dir }}/run
    - source: salt://mail/files/mailfleet-watch-run.jinja
    - template: jinja
    - makedirs: True
    - dir_mode: "0700"
    - mode: "0700"
    - context:
        python: {{ (grains.get("pythonexecutable") or "/usr/bin/python3") | tojson }}  {#- a core grain; the fallback is for renders with hand-made grains #}
        extmods: {{ opts["extension_modules"] | tojson }}
        watch_dir: {{ watch_dir | tojson }}

{#- This host's report key (the master's mailfleet_bans ext_pillar hands each host its own):
    the detector signs every report with it; the master acts on no unsigned report. #}
{%- set report_key = salt["pillar.get"]("mailfleet_report_key") %}
{%- if report_key %}
mailfleet-watch-report-key:
  file.managed:
    - name: {{ (watch_dir ~ "/report.key") | tojson }}
    - contents: {{ report_key | tojson | tojson }}
    - mode: "0600"
    - show_changes: False
    - require:
      - file: mailfleet-watch-launcher
{%- endif %}

mailfleet-watch-settings:
  mailfleet_detector.configured:
    - name: {{ watch_dir | tojson }}
    - settings: {{ settings | tojson }}
    - require:
      - file: mailfleet-watch-launcher

{#- Written by earlier versions (the engine's settings at minion start, then a restart). #}
mailfleet-defense-engine-conf-legacy:
  file.absent:
    - name: {{ conf_dir }}/mailfleet-defense.conf

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
