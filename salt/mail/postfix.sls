{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set sql_maps = ["domains", "mailboxes", "alias_domain_mailboxes", "aliases",
                    "alias_domain_aliases", "catchall", "alias_domain_catchall", "sender_login"] %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
  - mail.database
  - mail.tls
{{ sysrc(L, "postfix") }}

{#- Every candidate main.cf/master.cf is checked with postconf beside the live other half
    before it replaces the live file; a bad one leaves the running config untouched. #}
mailfleet-postfix-check-script:
  file.managed:
    - name: {{ L.sbin }}/mailfleet-postfix-check
    - source: salt://mail/files/mailfleet-postfix-check.sh
    - mode: "0755"

mailfleet-postfix-sql-dir:
  file.directory:
    - name: {{ L.postfix_sql_dir }}
    - user: root
    - group: postfix
    - mode: "0750"
    - require:
      - pkg: mailfleet-packages

{%- for map in sql_maps %}
mailfleet-postfix-sql-{{ map }}:
  file.managed:
    - name: {{ L.postfix_sql_dir }}/{{ map }}.cf
    - source: salt://mail/files/postfix-sql.cf.jinja
    - template: jinja
    - show_changes: False   # holds the DB password: no diff in the job return
    - context:
        mf: {{ mf | json }}
        map: {{ map }}
    - user: root
    - group: postfix
    - mode: "0640"
    - require:
      - file: mailfleet-postfix-sql-dir
    - watch_in:
      - service: mailfleet-postfix
{%- endfor %}

{%- for part in ("main", "master") %}
mailfleet-postfix-{{ part }}-cf:
  file.managed:
    - name: {{ L.postfix_dir }}/{{ part }}.cf
    - source: salt://mail/files/postfix-{{ part }}.cf.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
    - mode: "0644"
    - check_cmd: {{ L.sbin }}/mailfleet-postfix-check {{ part }}
    - require:
      - file: mailfleet-postfix-check-script
      - cmd: mailfleet-certificate
    - watch_in:
      - service: mailfleet-postfix
{%- endfor %}

{%- if L.os == "FreeBSD" %}
{#- Base sendmail off now (rc.conf only takes effect at boot), and mailwrapper(8) pointed at
    Postfix so sendmail(1), mailq and newaliases of cron and periodic reach Postfix
    (the postfix package's pkg-message and the Handbook's "Changing the MTA"). #}
mailfleet-sendmail-stopped:
  cmd.run:
    - name: service sendmail onestop
    - onlyif: service sendmail onestatus
    - require_in:
      - service: mailfleet-postfix

mailfleet-mailer-conf:
  file.managed:
    - name: {{ L.mailer_conf }}
    - source: /usr/local/share/postfix/mailer.conf.postfix
    - makedirs: True
    - mode: "0644"
    - require:
      - pkg: mailfleet-packages
    - require_in:
      - cmd: mailfleet-postfix-aliases
{%- endif %}

{#- Debian 13's postfix, installed with "No configuration", leaves no /etc/aliases (12's
    did), and newaliases refuses a missing file: create the stock one, never replace it. #}
mailfleet-postfix-aliases-file:
  file.managed:
    - name: {{ L.aliases_file }}
    - replace: False
    - contents: |
        # See man 5 aliases for format (created by mailfleet: the system had none)
        postmaster:    root
    - require:
      - pkg: mailfleet-packages

mailfleet-postfix-aliases:
  cmd.run:
    - name: {{ L.postfix_newaliases }}
    - onchanges:
      - file: mailfleet-postfix-main-cf
      - file: mailfleet-postfix-aliases-file
    - require:
      - file: mailfleet-postfix-aliases-file
    - require_in:
      - service: mailfleet-postfix

mailfleet-postfix:
  service.running:
    - name: postfix
    - enable: True
    - reload: True
    - require:
      - mailfleet_db: mailfleet-database
