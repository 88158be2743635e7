#!/bin/sh
# Runs inside a freshly debootstrapped tree (as a plain nspawn chroot, host network), with the
# release's suite as its argument: one recipe for every release. Installs the packages of
# packages.txt and a venv with salt built for the image's own Python, then leaves every
# service disabled: the lab's per-host init decides at boot what each role runs.
set -eu
SUITE=${1:?usage: recipe.sh SUITE}
BUILD=/var/tmp/mfbuild
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

cat > /etc/apt/sources.list <<SRC
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
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
grep -v -e '^#' -e '^$' $BUILD/packages.txt | xargs apt-get install -y -q --no-install-recommends

# Salt from PyPI, pinned, in its own venv (Debian ships no 3008), built here for this
# release's Python (3.11 on bookworm, 3.13 on trixie: no wheel built elsewhere fits both).
# salt and timelib ship only sources and timelib has C code: a compiler is installed for
# the build and purged after it, so the image carries none.
BUILD_DEPS=""
for pkg in gcc libc6-dev python3-dev; do  # only what the image lacks is purged again
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || BUILD_DEPS="$BUILD_DEPS $pkg"
done
[ -z "$BUILD_DEPS" ] || apt-get install -y -q --no-install-recommends $BUILD_DEPS
python3 -m venv /opt/salt
# PIP_CERT, not --cert: pip's isolated build environments (setuptools for the sdists) read
# only the environment.
[ ! -f $BUILD/build-ca.crt ] || export PIP_CERT=$BUILD/build-ca.crt
/opt/salt/bin/pip install -q --no-cache-dir --disable-pip-version-check \
    -c $BUILD/image-requirements.lock salt pymysql dnspython cryptography
[ -z "$BUILD_DEPS" ] || apt-get purge -y -q --autoremove $BUILD_DEPS
/opt/salt/bin/salt-call --version
apt-get clean
rm -rf /var/lib/apt/lists/*

# Everything off by default; the lab init enables per role, the mail states per host.
for unit in postfix dovecot mariadb rspamd nginx named bind9 certbot.timer \
            apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
            fstrim.timer logrotate.timer systemd-timesyncd nftables redis-server \
            $(cd /lib/systemd/system && ls php*-fpm.service 2>/dev/null); do
    systemctl disable "$unit" >/dev/null 2>&1 || true
done
systemctl enable systemd-networkd >/dev/null 2>&1 || true
rm -f /usr/sbin/policy-rc.d
# Debian's postinst leaves an empty machine-id; keep it empty so each boot gets a fresh one.
: > /etc/machine-id
