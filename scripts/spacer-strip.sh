#!/bin/sh
# lib-spacer: STRIP for the kvm image rule only (see Linker.uk). Runs strip with
# the rule's arguments, then `spacer compact` on the stripped image (the argument
# after -o): with --pack the file keeps the loaded bytes, not the padding, and
# one section header per run of µlib sections. Loaded memory is unchanged.
# Usage: spacer-strip.sh NODE CLI --pack|--no-pack STRIP [strip arguments...]
node=$1 cli=$2 pack=$3 strip=$4
shift 4
"$strip" "$@" || exit
out= prev=
for a in "$@"; do
	[ "$prev" = "-o" ] && out=$a
	prev=$a
done
[ -n "$out" ] || exit 0
exec "$node" "$cli" compact "$pack" "$out"
