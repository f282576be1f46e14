#!/bin/sh
# lib-spacer: STRIP for the kvm image rule only (see Linker.uk). Runs strip with
# the rule's arguments, then `spacer compact` on the stripped image (the argument
# after -o): with --pack the file keeps the loaded bytes, not the padding, and
# one section header per run of µlib sections. Loaded memory is unchanged. With
# --vmm=firecracker it then checks the rules of Firecracker's ELF loader.
# Usage: spacer-strip.sh NODE CLI --pack|--no-pack [--vmm=firecracker] STRIP [strip arguments...]
node=$1 cli=$2
shift 2
flags=
while [ "${1#--}" != "$1" ]; do
	flags="$flags $1"
	shift
done
strip=$1
shift
"$strip" "$@" || exit
out= prev=
for a in "$@"; do
	[ "$prev" = "-o" ] && out=$a
	prev=$a
done
[ -n "$out" ] || exit 0
# shellcheck disable=SC2086 # the flags are single words, one per option
exec "$node" "$cli" compact $flags "$out"
