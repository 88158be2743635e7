#!/bin/sh
# Managed by mailfleet (salt://mail/files/mailfleet-mta-sts-cert.sh), run by mail.mtasts.
# mailfleet-mta-sts-cert NAME LIVE_DIR WEBROOT ACME_SERVER CONTACT ADDRESS...
# The certificate of mta-sts.<domain> (its own certbot lineage, named NAME), ordered over
# HTTP-01 only once DNS sends NAME to this host: before `salt-run mailfleet_dns.publish`
# has published its A/AAAA records the order could only fail, so it waits and says so.
# Output: Salt's stateful cmd.run protocol (last line changed=... comment=...).
set -u
name=$1 live=$2 webroot=$3 server=$4 contact=$5
shift 5
cert="$live/$name/fullchain.pem"
if [ -s "$cert" ] && openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null &&
        openssl x509 -in "$cert" -noout -ext subjectAltName | grep -q "DNS:$name\$\|DNS:$name,"; then
    echo "changed=no comment='certificate for $name valid for more than 30 days'"
    exit 0
fi
resolved=$(getent ahosts "$name" | awk '{print $1}' | sort -u | tr '\n' ' ')
here=no
for addr in "$@"; do
    for r in $resolved; do [ "$r" = "$addr" ] && here=yes; done
done
if [ "$here" = no ]; then
    echo "changed=no comment='$name does not resolve to this host ($*; DNS has: ${resolved:-nothing}): publish the domain records (salt-run mailfleet_dns.publish) and apply again; no certificate and no MTA-STS site for it yet'"
    exit 0
fi
if ! certbot certonly --non-interactive --agree-tos --keep-until-expiring \
        --no-random-sleep-on-renew --webroot -w "$webroot" --server "$server" -m "$contact" \
        --cert-name "$name" -d "$name" >&2; then
    echo "changed=no comment='certbot could not get a certificate for $name (see above)'"
    exit 1
fi
echo "changed=yes comment='certificate for $name issued'"
