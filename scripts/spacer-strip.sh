#!/bin/sh
# lib-spacer: STRIP for the kvm image rule only (see Linker.uk). Runs strip with
# the rule's arguments, then `spacer compact` on the stripped image (the argument
# after -o): with --pack the file keeps the loaded bytes, not the padding, and
# one section header per run of µlib sections. Loaded memory is unchanged. With
# --vmm=firecracker it then checks the rules of Firecracker's ELF loader.
# Used when Node runs each command; through the link server, the server's client
# does the same in one process (helper/server/client.c, --strip).
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
# `spacer finish --precompact` may have compacted this very file already (helper/precompact.ts):
# take its result when our stripped output has the hash it started from and the options match.
pre="$(dirname "$out")/spacer/$(basename "$out").compact"
if [ -f "$pre.key" ] && command -v sha256sum >/dev/null 2>&1; then
	pack=1 holes=0 vmm=qemu known=1
	for f in $flags; do
		case $f in
		--pack) pack=1 ;;
		--no-pack) pack=0 ;;
		--holes) holes=1 ;;
		--no-holes) holes=0 ;;
		--vmm=*) vmm=${f#--vmm=} ;;
		*) known=0 ;;
		esac
	done
	# (Shell builtins where they do: each program started costs a few ms of the link step.)
	sum=$(sha256sum <"$out")
	sum=${sum%% *}
	k1= k2=
	{ IFS= read -r k1 && IFS= read -r k2; } <"$pre.key" || true
	if [ "$known" = 1 ] && [ "$k1" = "$sum" ] && [ "$k2" = "pack=$pack holes=$holes vmm=$vmm" ]; then
		tmp="$out.spacer-tmp-$$"
		if cp "$pre" "$tmp" && chmod --reference="$out" "$tmp" && mv -f "$tmp" "$out"; then
			while IFS= read -r line; do printf '%s\n' "$line"; done <"$pre.log" >&2
			exit 0
		fi
		rm -f "$tmp"
	fi
fi
# shellcheck disable=SC2086 # the flags are single words, one per option
exec "$node" "$cli" compact $flags "$out"
