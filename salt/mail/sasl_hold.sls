{#- Issue 6, compromised accounts: the SASL users whose outbound mail is held, from the
    master's ledger (runner mailfleet_accounts; pillar mailfleet_sasl_holds from the
    mailfleet_bans ext_pillar). The map exists before main.cf names it
    (postfix-main.cf.jinja: check_sasl_access first in smtpd_recipient_restrictions);
    held users' queued mail is put on hold, released users' held mail delivered.
    In the highstate, and on a schedule with splay, so a host that was down or cut off
    when a hold or release was pushed catches up by itself.
    Pillar mailfleet:defense:holds_every (default 300 s), holds_splay (60 s). #}
{%- from "mail/map.jinja" import mf with context %}
{%- set d = salt["pillar.get"]("mailfleet:defense", {}) or {} %}
include:
  - mail.postfix

mailfleet-sasl-holds:
  mailfleet_sasl_hold.reconciled:
    - name: {{ mf.lookup.postfix_dir }}/mailfleet_sasl_hold
    - require:
      - pkg: mailfleet-packages
    - require_in:
      - file: mailfleet-postfix-main-cf

mailfleet-sasl-holds-schedule:
  schedule.present:
    - name: mailfleet_sasl_holds_reconcile
    - function: mailfleet_sasl_hold.sync
    - seconds: {{ d.get("holds_every", 300) | int }}
    - splay: {{ d.get("holds_splay", 60) | int }}
    - return_job: False
