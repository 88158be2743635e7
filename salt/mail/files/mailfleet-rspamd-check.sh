#!/bin/sh
# mailfleet-rspamd-check CONFDIR RELPATH CANDIDATE
# Checks a candidate rspamd file (RELPATH under CONFDIR, e.g. local.d/actions.conf) with
# `rspamadm configtest` in a scratch copy of the live configuration, the candidate in its
# place. A syntax error refuses the candidate and the live file stays.
set -eu
confdir=$1 rel=$2 candidate=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp -R -p "$confdir/." "$dir/"
mkdir -p "$(dirname "$dir/$rel")"
cp "$candidate" "$dir/$rel"
if ! out=$(rspamadm --var=CONFDIR="$dir" --var=LOCAL_CONFDIR="$dir" configtest -c "$dir/rspamd.conf" 2>&1); then
    echo "rspamd $rel refused:" >&2
    echo "$out" | grep -v '^address resolution for' >&2
    exit 1
fi
