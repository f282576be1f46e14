#!/usr/bin/env bash
# Sets up a fresh Debian machine for lib-spacer: the GNU toolchain and qemu from Debian, the
# npm packages, and the compiled helper. Run as root (or with sudo available); safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for cmd in gcc ld objcopy readelf strip qemu-system-x86_64 make; do
  command -v "$cmd" >/dev/null 2>&1 || need+=("$cmd")
done
# The real-code test links SQLite statically against glibc.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc.a)
if ((${#need[@]})); then
  echo "setup: installing Debian packages for: ${need[*]}" >&2
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev binutils make qemu-system-x86 >/dev/null
fi
echo "setup: installing npm packages" >&2
npm ci --no-audit --no-fund --loglevel=error
echo "setup: building the helper" >&2
npm run --silent build
echo "setup: done ($(node --version), $(ld --version | head -1), $(qemu-system-x86_64 --version | head -1))" >&2
