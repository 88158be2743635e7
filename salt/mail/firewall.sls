{%- from "mail/map.jinja" import mf with context %}
{%- set L = mf.lookup %}
{%- set ports = [25, 587, 993, 80, 443] + ([465] if mf.host.submissions else [])
                + [mf.host.ssh_port] + mf.host.extra_tcp_ports %}
{%- from "mail/sysrc.jinja" import sysrc with context %}
include:
  - mail.packages
{{ sysrc(L, "firewall") }}

{%- if L.firewall == "nftables" %}
{#- The ruleset is checked (nft -c) before it replaces the live file, and loading it
    re-creates only the chains: the ban sets keep their elements. #}
mailfleet-nftables-rules:
  file.managed:
    - name: {{ L.nftables_conf }}
    - source: salt://mail/files/mailfleet.nft.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        ports: {{ ports | unique | sort | json }}
        master_ip: {{ opts.get("master_ip") | json }}
    - makedirs: True
    - mode: "0600"
    - check_cmd: nft -c -f

mailfleet-nftables-loaded:
  cmd.run:
    - name: nft -f {{ L.nftables_conf }}
    - onchanges:
      - file: mailfleet-nftables-rules

mailfleet-nftables-on-boot:
  file.managed:
    - name: /etc/systemd/system/mailfleet-firewall.service
    - mode: "0644"
    - contents: |
        [Unit]
        Description=mailfleet firewall (nftables table inet mailfleet)
        Before=network-pre.target postfix.service dovecot.service
        Wants=network-pre.target
        [Service]
        Type=oneshot
        RemainAfterExit=yes
        ExecStart=/usr/sbin/nft -f {{ L.nftables_conf }}
        [Install]
        WantedBy=multi-user.target
  service.enabled:
    - name: mailfleet-firewall
    - require:
      - file: mailfleet-nftables-on-boot
      - file: mailfleet-nftables-rules

mailfleet-nftables-present:
  cmd.run:
    - name: nft -f {{ L.nftables_conf }}
    - unless: nft list table inet mailfleet
    - require:
      - file: mailfleet-nftables-rules
{%- else %}
mailfleet-pf-rules:
  file.managed:
    - name: {{ L.pf_conf }}
    - source: salt://mail/files/pf.conf.jinja
    - template: jinja
    - context:
        mf: {{ mf | json }}
        ports: {{ ports | unique | sort | json }}
    - mode: "0600"
    - check_cmd: pfctl -n -f

mailfleet-pf-loaded:
  cmd.run:
    - name: pfctl -f {{ L.pf_conf }}
    - onchanges:
      - file: mailfleet-pf-rules
{%- endif %}
