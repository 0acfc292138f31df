#!/usr/bin/env bash
# Installs the pinned SecantusDB into the project-local virtualenv (.venv), once.
# Safe to run from several processes at once: a lock serialises the install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
pin="SecantusDB==0.7.0b3"
# The worker's reporter (clients/python) and what its pytest run needs: a change to either
# file installs again.
reporter="$root/clients/python"
marker="$venv/.installed-$pin-$(cat "$reporter/pyproject.toml" "$reporter/requirements-test.txt" | sha256sum | cut -c1-12)"
[ -f "$marker" ] && exit 0
mkdir -p "$root/target"
exec 9>"$root/target/.venv.lock"
flock 9
[ -f "$marker" ] && exit 0
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "ensure-venv: $python not found; install Python 3.10 or newer" >&2
  exit 1
fi
echo "ensure-venv: installing $pin into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$pin" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reporter/requirements-test.txt" -e "$reporter" >&2
touch "$marker"
