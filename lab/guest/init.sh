#!/bin/sh
# Runs once at boot inside every lab host (mailfleet-lab-init.service), before the role's
# services. Everything it needs is in /etc/mailfleet-lab, bound in read-only by the lab.
set -eu
. /etc/mailfleet-lab/host.env   # ROLE NAME FQDN IP PREFIXLEN NAMESERVER DOMAIN

hostname "$FQDN"
echo "$FQDN" > /etc/hostname
echo "$FQDN" > /etc/mailname
cat > /etc/hosts <<HOSTS
127.0.0.1 localhost
::1 localhost ip6-localhost ip6-loopback
$IP $FQDN $NAME
HOSTS
printf 'search %s\nnameserver %s\noptions timeout:2 attempts:2\n' "$DOMAIN" "$NAMESERVER" > /etc/resolv.conf

# The lab link. No gateway on purpose: the lab range reaches nothing but the bridge.
ip link set lo up
ip addr add "$IP/$PREFIXLEN" dev host0
ip link set host0 up
# systemd-networkd (started after this script) manages host0 with exactly this address:
# without a file of ours it applies the image's container default (DHCP, IPv4 link-local)
# and may drop an address it did not set (seen on Debian 13's systemd 257: mail02's minion
# never reached the master after a busy boot).
mkdir -p /etc/systemd/network
cat > /etc/systemd/network/10-mailfleet-lab.network <<NET
[Match]
Name=host0

[Network]
Address=$IP/$PREFIXLEN
DHCP=no
LinkLocalAddressing=ipv6
IPv6AcceptRA=no
KeepConfiguration=static
NET

# Trust the lab CA (Pebble's listener CA and Pebble's issuing root), one cert per file.
if [ -d /etc/mailfleet-lab/shared/ca ]; then
    for pem in /etc/mailfleet-lab/shared/ca/*.pem; do
        [ -e "$pem" ] || continue
        cp "$pem" "/usr/local/share/ca-certificates/mailfleet-lab-$(basename "$pem" .pem).crt"
    done
    update-ca-certificates >/dev/null 2>&1
fi

case "$ROLE" in
dns)
    cp /etc/mailfleet-lab/bind/named.conf /etc/bind/named.conf.options
    : > /etc/bind/named.conf.local
    cp /etc/mailfleet-lab/bind/*.zone /var/lib/bind/
    chown bind:bind /var/lib/bind/*.zone
    ;;
mail)
    mkdir -p /etc/salt/pki/minion /etc/salt/minion.d
    cp /etc/mailfleet-lab/salt/minion /etc/salt/minion
    cp /etc/mailfleet-lab/salt/minion.d/*.conf /etc/salt/minion.d/ 2>/dev/null || true
    cp /etc/mailfleet-lab/salt/pki/* /etc/salt/pki/minion/
    chmod 0700 /etc/salt/pki/minion
    chmod 0400 /etc/salt/pki/minion/minion.pem
    ;;
esac
