#!/usr/bin/env bash
# `make bench` needs: the SecantusDB Rust server (built once into .bench-tools/, about 4
# minutes, needs cmake) and wrk. Idempotent; does nothing when both are there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.bench-tools"
version="0.5.3-beta.196"

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: $* missing; install it (apt-get install -y $*) or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

command -v wrk >/dev/null || apt_install wrk
# `make bench-instructions` counts with callgrind.
command -v callgrind_control >/dev/null || apt_install valgrind

if ! "$tools/bin/secantusd-rs" --version 2>/dev/null | grep -qF "$version"; then
  command -v cmake >/dev/null || apt_install cmake
  echo "bench: building the SecantusDB server $version into .bench-tools (once, about 4 minutes)" >&2
  cargo install secantus-mdb --version "$version" --ignore-rust-version --root "$tools"
fi
