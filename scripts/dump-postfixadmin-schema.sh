#!/bin/sh
# Regenerates salt/mail/files/postfixadmin-3.3.13.sql: the schema PostfixAdmin 3.3.13
# (Debian 12 package) creates on MariaDB 10.11, obtained by running PostfixAdmin's own
# upgrade.php against a real mariadbd, never written by hand.
#
# It runs in a throwaway container of the lab base image (Debian's mariadb-server, php and
# postfixadmin installed): volatile overlay, private network, no boot, machine name
# mf-schema. Inside: a fresh mariadbd (Debian's /etc/mysql config, so the server default
# charset is what a Debian host gets), the database created the way dbconfig-common does
# (plain CREATE DATABASE), PostfixAdmin configured through Debian's dbconfig.inc.php plus
# config.local.php, `php upgrade.php`, then `mysqldump --no-data` and the config rows.
# The result is made stable (no AUTO_INCREMENT counters, dump comments or timestamps) and
# idempotent (CREATE TABLE IF NOT EXISTS, INSERT IGNORE for the version row, so an older
# PostfixAdmin database keeps its own version and PostfixAdmin upgrades it itself).
#
# Self-check, in the same container: the produced file is loaded into a second, empty
# database; upgrade.php must then report it up to date and a second dump must be identical.
#
# Usage: scripts/dump-postfixadmin-schema.sh [IMAGE_DIR] [OUTPUT]
#   IMAGE_DIR  default: the complete image under /var/cache/mailfleet-lab/images/
#   OUTPUT     default: salt/mail/files/postfixadmin-3.3.13.sql (relative to the repo)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
images=/var/cache/mailfleet-lab/images
image=${1:-}
out=${2:-$here/salt/mail/files/postfixadmin-3.3.13.sql}

if [ -z "$image" ]; then
    for d in "$images"/*/; do
        d=${d%/}
        case "$d" in *.partial) continue ;; esac
        [ -e "$d/etc/mailfleet-image" ] && image=$d
    done
fi
[ -n "$image" ] && [ -e "$image/etc/mailfleet-image" ] || {
    echo "dump-postfixadmin-schema: no complete lab image (etc/mailfleet-image) under $images" >&2
    exit 2
}
[ "$(id -u)" = 0 ] || { echo "dump-postfixadmin-schema: needs root (systemd-nspawn)" >&2; exit 2; }

work=$(mktemp -d /tmp/mf-schema.XXXXXX)
trap 'rm -rf "$work"' EXIT INT TERM

# The script run inside the container (as its PID 1, /bin/sh). Everything it prints goes
# to $work/log; results land in /out (= $work, bound in).
cat >"$work/inner.sh" <<'INNER'
#!/bin/sh
set -eu
exec >>/out/log 2>&1
PFA_VERSION=$(dpkg-query -W -f='${Version}' postfixadmin)
echo "postfixadmin $PFA_VERSION, $(mariadbd --version)"
case "$PFA_VERSION" in 3.3.13*) ;; *) echo "expected postfixadmin 3.3.13" ; exit 3 ;; esac

datadir=/tmp/mariadb
sock=/run/mysqld/mysqld.sock
mkdir -p /run/mysqld "$datadir"
chown mysql:mysql /run/mysqld "$datadir"
mariadb-install-db --user=mysql --datadir="$datadir" --auth-root-authentication-method=socket \
    --skip-test-db >/out/install-db.log 2>&1
mariadbd --user=mysql --datadir="$datadir" --socket="$sock" --skip-networking \
    --pid-file=/run/mysqld/mysqld.pid --log-error=/out/mariadbd.err &
dbpid=$!
stop_db() {
    if kill -0 "$dbpid" 2>/dev/null; then
        kill -TERM "$dbpid"
        wait "$dbpid" || true
    fi
}
trap stop_db EXIT INT TERM
i=0
until mariadb-admin --socket="$sock" ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "mariadbd did not start"; exit 4; }
    kill -0 "$dbpid" || { echo "mariadbd died"; exit 4; }
    sleep 0.2
done
mariadb --socket="$sock" -e "SELECT @@character_set_server, @@collation_server, @@version"

pfa_db() {  # point PostfixAdmin at database $1 (Debian: dbconfig.inc.php + config.local.php)
    cat >/etc/postfixadmin/dbconfig.inc.php <<EOF
<?php
\$dbuser='postfixadmin';
\$dbpass='schema-dump';
\$basepath='';
\$dbname='$1';
\$dbserver='localhost';
\$dbport='';
\$dbtype='mysqli';
EOF
    cat >/etc/postfixadmin/config.local.php <<EOF
<?php
\$CONF['configured'] = true;
\$CONF['database_type'] = 'mysqli';
\$CONF['database_host'] = 'localhost';
\$CONF['database_socket'] = '$sock';
\$CONF['database_user'] = 'postfixadmin';
\$CONF['database_password'] = 'schema-dump';
\$CONF['database_name'] = '$1';
EOF
}
upgrade() {
    (cd /usr/share/postfixadmin/public && php upgrade.php) | sed 's/<[^>]*>//g' | tee "/out/upgrade-$1.log"
}
dump() {  # schema then config rows of database $1
    mysqldump --socket="$sock" --no-data --compact --skip-dump-date --skip-add-drop-table \
        --skip-triggers "$1"
    echo "-- config rows"
    mariadb --socket="$sock" -N -B -e "SELECT name, value FROM config ORDER BY name" "$1"
}

# As dbconfig-common does it: plain CREATE DATABASE (server default charset), one user.
mariadb --socket="$sock" -e "
    CREATE DATABASE postfix;
    CREATE DATABASE postfix_check;
    CREATE USER postfixadmin@localhost IDENTIFIED BY 'schema-dump';
    GRANT ALL ON postfix.* TO postfixadmin@localhost;
    GRANT ALL ON postfix_check.* TO postfixadmin@localhost;"

pfa_db postfix
upgrade first
grep -q "Database is up to date" /out/upgrade-first.log && { echo "upgrade.php did nothing"; exit 5; }
upgrade second
grep -q "Database is up to date" /out/upgrade-second.log || { echo "second upgrade not a no-op"; exit 5; }
dump postfix >/out/raw.sql.tmp
mv /out/raw.sql.tmp /out/raw.sql

# The host turns raw.sql into the committed file and puts it here as schema.sql.
until [ -e /out/schema.sql ] || [ -e /out/abort ]; do sleep 0.2; done
[ -e /out/schema.sql ] || exit 6
mariadb --socket="$sock" postfix_check </out/schema.sql
mariadb --socket="$sock" postfix_check </out/schema.sql   # idempotent: a second load is a no-op
pfa_db postfix_check
upgrade check
grep -q "Database is up to date" /out/upgrade-check.log || { echo "PostfixAdmin wants to upgrade the loaded schema"; exit 7; }
dump postfix_check >/out/raw-check.sql
echo "inner done"
INNER
chmod 0755 "$work/inner.sh"

# Raw mysqldump -> committed SQL.
render() {
    ver=$(awk -F'\t' '/^-- config rows$/ {c=1; next} c && $1 == "version" {print $2}' "$1")
    cat <<EOF
-- PostfixAdmin 3.3.13 schema (Debian 12 package) as its upgrade.php creates it on
-- MariaDB 10.11, database created with the server defaults (Debian: utf8mb4).
-- Generated by scripts/dump-postfixadmin-schema.sh: do not edit, regenerate.
-- Idempotent: tables are created only when missing; the version row is inserted only when
-- missing (an existing PostfixAdmin database keeps its version and upgrades itself).
SET NAMES utf8mb4;
SET @mailfleet_old_fk_checks = @@FOREIGN_KEY_CHECKS;
SET FOREIGN_KEY_CHECKS = 0;

EOF
    awk '/^-- config rows$/ {exit} {print}' "$1" \
        | grep -v -E '^/\*!40101 SET (@saved_cs_client|character_set_client)|^/\*M!999999\\- enable the sandbox mode' \
        | sed -E -e 's/^CREATE TABLE `/CREATE TABLE IF NOT EXISTS `/' \
                 -e 's/ AUTO_INCREMENT=[0-9]+//' \
                 -e 's/^\) (ENGINE=.*);$/) \1;\n/'
    awk -F'\t' '/^-- config rows$/ {c=1; next} c {printf "INSERT IGNORE INTO `config` (`name`, `value`) VALUES (\x27%s\x27, \x27%s\x27);\n", $1, $2}' "$1"
    cat <<EOF

SET FOREIGN_KEY_CHECKS = @mailfleet_old_fk_checks;
-- PostfixAdmin database version: $ver
EOF
}

echo "dump-postfixadmin-schema: image $image"
timeout 600 systemd-nspawn -q -D "$image" --volatile=overlay --register=no --keep-unit \
    --private-network -M mf-schema --bind="$work:/out" --pipe /out/inner.sh </dev/null &
nspawn=$!

# Wait for the raw dump (or the container's end), render it, hand it back for the check.
while [ ! -e "$work/raw.sql" ] && kill -0 "$nspawn" 2>/dev/null; do sleep 0.2; done
if [ -e "$work/raw.sql" ]; then
    render "$work/raw.sql" >"$work/schema.sql.tmp" && mv "$work/schema.sql.tmp" "$work/schema.sql" \
        || touch "$work/abort"
fi
rc=0
wait "$nspawn" || rc=$?
if [ "$rc" != 0 ] || ! grep -q "inner done" "$work/log"; then
    echo "dump-postfixadmin-schema: container failed (rc=$rc):" >&2
    cat "$work/log" "$work/mariadbd.err" >&2 2>/dev/null || true
    exit 1
fi
# The check database must dump to the very same schema and config rows (AUTO_INCREMENT
# counters aside: the second, ignored INSERT of the version row consumes one).
for f in raw raw-check; do
    sed -E 's/ AUTO_INCREMENT=[0-9]+//' "$work/$f.sql" >"$work/$f.cmp"
done
if ! cmp -s "$work/raw.cmp" "$work/raw-check.cmp"; then
    echo "dump-postfixadmin-schema: reloaded schema differs from PostfixAdmin's:" >&2
    diff -u "$work/raw.cmp" "$work/raw-check.cmp" >&2 || true
    exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$work/schema.sql" "$out"
grep -c '^CREATE TABLE' "$out" | sed "s|^|dump-postfixadmin-schema: tables: |"
grep '^-- PostfixAdmin database version' "$out" | sed 's/^-- /dump-postfixadmin-schema: /'
echo "dump-postfixadmin-schema: wrote $out"
