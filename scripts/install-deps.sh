#!/bin/sh
# Installs what a fresh Debian 12 machine lacks to run mailfleet's tests and lab:
# Debian packages (only the missing ones, one `apt-get update` first) and the venv.
set -eu
APT_PACKAGES="systemd-container debootstrap nftables iproute2 util-linux python3-venv openssl mariadb-server chromium chromium-driver"
# chromium + chromium-driver: the browser tests (tests/lab/test_70_webmail.py, selenium).

missing=""
for pkg in $APT_PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install:$missing" >&2; exit 2; }
    echo "[deps] apt-get install$missing"
    apt-get update -q >/dev/null
    # Packages such as mariadb-server start their service on install; the tests start
    # their own instances, so keep the host's copies stopped (unless a policy exists).
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing >/dev/null || {
        [ -z "$policy" ] || rm -f "$policy"; exit 1; }
    [ -z "$policy" ] || rm -f "$policy"
fi
