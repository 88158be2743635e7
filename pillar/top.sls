# Pillar top for the lab fleet. Secrets reach only the hosts that need them:
# - a host's file (DB passwords, probe password) only that host;
# - a domain's file (pillar/domains/<domain>.yaml, its mailboxes' hashes) only the hosts it
#   lists under `hosts`: the mailfleet_domains ext_pillar hands it out, so adding that one
#   file is the whole onboarding step.
base:
  '*mail*.lab.test':
    - lab.common
    - lab.inventory
  'mail01.lab.test':
    - lab.hosts.mail01
  'mail02.lab.test':
    - lab.hosts.mail02
  # Further lab mail hosts (MAILFLEET_LAB_MAIL_HOSTS=3, `labctl add`): the lab writes their
  # file into its own pillar root (/run/mailfleet-lab/pillar) when it boots them.
{%- for i in range(3, 81) %}
  'mail{{ "%02d" % i }}.lab.test':
    - lab.hosts.mail{{ "%02d" % i }}
    - ignore_missing: True
{%- endfor %}
