{#- Issue 6, DNSBL: the host's outbound mode from the master's ledger.
    - Detection runs in the mailfleet_watch engine (mail.defense passes pillar mailfleet:dnsbl).
    - The master decides (runner mailfleet_reroute) and records each host's mode in the
      ledger; the mailfleet_bans ext_pillar hands it over as pillar mailfleet_outbound and
      postfix-main.cf.jinja renders it (relayhost through a clean peer / hold with
      the retry transport and an extended queue lifetime / mynetworks of a peer admitting a
      relaying host). This SLS is what the runner applies on a host; in the highstate and on
      a schedule it makes a host that missed a change catch up.
    - When main.cf changed, the queue is flushed after the reload: held mail leaves at once
      when a host is restored or starts relaying.
    Pillar mailfleet:dnsbl:reconcile_every (default 900 s), reconcile_splay (120 s). #}
{%- set conf = salt["pillar.get"]("mailfleet:dnsbl", {}) or {} %}
include:
  - mail.postfix

mailfleet-dnsbl-outbound-flush:
  cmd.run:
    - name: postqueue -f
    - onchanges:
      - file: mailfleet-postfix-main-cf
    - require:
      - service: mailfleet-postfix

mailfleet-dnsbl-outbound-schedule:
  schedule.present:
    - name: mailfleet_outbound_reconcile
    - function: state.sls
    - job_args:
      - mail.dnsbl
    - job_kwargs:
        queue: True
    - seconds: {{ conf.get("reconcile_every", 900) | int }}
    - splay: {{ conf.get("reconcile_splay", 120) | int }}
    - return_job: False
