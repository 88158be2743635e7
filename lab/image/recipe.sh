#!/bin/sh
# Runs inside the freshly debootstrapped tree (as a plain nspawn chroot, host network).
# Installs the packages of packages.txt and a venv with salt, then leaves every service
# disabled: the lab's per-host init decides at boot what each role runs.
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

cat > /etc/apt/sources.list <<SRC
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SRC
# No service may start inside the build chroot.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

debconf-set-selections <<SEL
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
roundcube-core roundcube/dbconfig-install boolean false
postfixadmin postfixadmin/dbconfig-install boolean false
dbconfig-common dbconfig-common/dbconfig-install boolean false
SEL

apt-get update -q
grep -v -e '^#' -e '^$' /var/tmp/mfbuild/packages.txt | xargs apt-get install -y -q --no-install-recommends
apt-get clean
rm -rf /var/lib/apt/lists/*

# Salt from PyPI, pinned, in its own venv (Debian ships no 3008).
python3 -m venv /opt/salt
# Wheels were built on the build machine (salt and timelib ship only sources): install
# offline, so the image needs no compiler and its pip never reaches the network.
/opt/salt/bin/pip install -q --no-cache-dir --disable-pip-version-check --no-index \
    --find-links /var/tmp/mfbuild/wheels salt pymysql dnspython cryptography

# Everything off by default; the lab init enables per role, the mail states per host.
for unit in postfix dovecot mariadb rspamd nginx php8.2-fpm named bind9 certbot.timer \
            apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
            fstrim.timer logrotate.timer systemd-timesyncd nftables; do
    systemctl disable "$unit" >/dev/null 2>&1 || true
done
systemctl enable systemd-networkd >/dev/null 2>&1 || true
rm -f /usr/sbin/policy-rc.d
# Debian's postinst leaves an empty machine-id; keep it empty so each boot gets a fresh one.
: > /etc/machine-id
