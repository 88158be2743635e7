#!/bin/sh
# Managed by mailfleet (salt://mail/files/mailfleet-nginx-check.sh).
# mailfleet-nginx-check MAIN_CONF TARGET CANDIDATE
# `nginx -t` of the live configuration as it would be with CANDIDATE in TARGET's place,
# run on a private copy of the configuration folder: a site file that nginx refuses never
# replaces the live one (Salt's check_cmd passes the candidate as the last argument).
set -eu
main=$1 target=$2 candidate=$3
confdir=$(dirname "$main")
case "$target" in
    "$confdir"/*) rel=${target#"$confdir"/} ;;
    *) echo "mailfleet-nginx-check: $target is not under $confdir" >&2; exit 2 ;;
esac
tmp=$(mktemp -d /tmp/mailfleet-nginx-check.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cp -a "$confdir/." "$tmp/"
mkdir -p "$(dirname "$tmp/$rel")"
cp "$candidate" "$tmp/$rel"
# Every include of the copy points into the copy (absolute paths under the folder).
find "$tmp" -type f -name '*.conf' -exec sed -i "s#$confdir/#$tmp/#g" {} +
sed -i "s#$confdir/#$tmp/#g" "$tmp/$(basename "$main")"
nginx -t -q -c "$tmp/$(basename "$main")"
