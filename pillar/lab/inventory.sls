# The fleet's host inventory, owned by the master (issue 13): what other hosts act on (a
# peer's mynetworks while a host relays through it, relay addresses, the never-ban list)
# comes from here, never from a host's grains. The lab numbers its mail hosts mail01..mail80
# at 198.18.0.11..90 (lab/mflab/config.py); a real fleet lists each host by hand.
mailfleet:
  inventory:
{%- for i in range(1, 81) %}
    mail{{ "%02d" % i }}.lab.test: {addresses: [198.18.0.{{ 10 + i }}]}
{%- endfor %}
