{#- "STOP until the PTR matches": with the pillar switch
    mailfleet:deliverability:hold_outbound_on_bad_ptr, this host's mail to other domains is
    held, deferred and never bounced, while its forward-confirmed reverse DNS fails, and
    released (and the queue flushed) when it passes.

    The check runs when this state is applied (mailfleet_fcrdns.check on the host, through
    its resolver or mailfleet:deliverability:resolver); a fixed PTR is picked up by the next
    apply. main.cf names the table in sender_dependent_default_transport_maps while the switch
    is on (salt://mail/files/postfix-main.cf.jinja); the table holds a retry: rule while the
    check fails. Local and virtual domains are delivered either way. While the switch is on,
    a minion schedule re-applies this SLS every recheck_every seconds (default 900). #}
{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set d = mf.get("deliverability") or {} %}
include:
  - mail.postfix

mailfleet-outbound-hold:
  mailfleet_outbound.held_while_fcrdns_fails:
    - name: {{ L.postfix_dir }}/mailfleet_outbound_hold.regexp
    - enabled: {{ d.get("hold_outbound_on_bad_ptr", False) | json }}
    - hostname: {{ mf.host.myhostname }}
    {%- if d.get("resolver") %}
    - resolver: {{ d.resolver | json }}
    {%- endif %}
    - require:
      - pkg: mailfleet-packages
    {#- the table exists before main.cf names it #}
    - require_in:
      - file: mailfleet-postfix-main-cf
    - watch_in:
      - service: mailfleet-postfix

{#- While the switch is on, the check also runs on a schedule (mailfleet:deliverability:
    recheck_every seconds, default 900): a fixed PTR releases the mail without anyone applying. #}
{%- if d.get("hold_outbound_on_bad_ptr") is sameas true %}
mailfleet-outbound-hold-recheck:
  schedule.present:
    - name: mailfleet_outbound_hold_recheck
    - function: state.sls
    - job_args:
      - mail.outbound_hold
    - job_kwargs:
        queue: True
    - seconds: {{ d.get("recheck_every", 900) | int }}
    - splay: 60
    {#- the check has just run: the first recheck is one period away, not at once #}
    - run_on_start: False
    - return_job: False
{%- else %}
mailfleet-outbound-hold-recheck:
  schedule.absent:
    - name: mailfleet_outbound_hold_recheck
{%- endif %}

{#- Released: what waited in the deferred queue goes now, not at its next backoff. #}
mailfleet-outbound-hold-flush:
  cmd.run:
    - name: {{ L.postfix_command_dir }}/postqueue -f
    - onchanges:
      - mailfleet_outbound: mailfleet-outbound-hold
    - require:
      - service: mailfleet-postfix
