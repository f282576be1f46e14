#!/bin/sh
# lib-spacer: STRIP for the kvm image rule only (see Linker.uk). Runs strip with
# the rule's arguments, then `spacer compact` on the stripped image (the argument
# after -o): one section header per run of µlib sections, no zero pages between
# µlib groups in the file. Loaded bytes are unchanged.
# Usage: spacer-strip.sh NODE CLI STRIP [strip arguments...]
node=$1 cli=$2 strip=$3
shift 3
"$strip" "$@" || exit
out= prev=
for a in "$@"; do
	[ "$prev" = "-o" ] && out=$a
	prev=$a
done
[ -n "$out" ] || exit 0
exec "$node" "$cli" compact "$out"
