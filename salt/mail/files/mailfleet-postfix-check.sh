#!/bin/sh
# mailfleet-postfix-check main|master CANDIDATE
# Checks a candidate main.cf or master.cf together with the live other half in a scratch
# config directory. Any warning or error from postconf refuses the candidate.
set -eu
part=$1 candidate=$2
# No postconf means nothing to check with: refuse (set -e) rather than guess a path.
# -d: the compiled-in default, readable before the first main.cf exists.
live=$(postconf -d -h config_directory)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for f in main.cf master.cf; do
    if [ -f "$live/$f" ]; then cp "$live/$f" "$dir/$f"; else : > "$dir/$f"; fi
done
cp "$candidate" "$dir/$part.cf"
errors=$( { postconf -c "$dir" -n >/dev/null; postconf -c "$dir" -M >/dev/null; } 2>&1 )
if [ -n "$errors" ]; then
    echo "postfix $part.cf refused:" >&2
    echo "$errors" >&2
    exit 1
fi
