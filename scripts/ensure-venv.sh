#!/usr/bin/env bash
# Installs pinned Python packages into a project-local virtualenv, once:
#
#   scripts/ensure-venv.sh                 # SecantusDB into .venv (the tests, make run)
#   scripts/ensure-venv.sh VENV PIN...     # e.g. .venv-schemathesis (scripts/schemathesis.sh)
#
# Safe to run from several processes at once: a lock per virtualenv serialises the install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="${1:-.venv}"
reporter="$root/clients/python"
extra=()
suffix=""
if [ "$#" -gt 1 ]; then
  shift
  pins=("$@")
else
  pins=("SecantusDB==0.7.0b3")
  # The worker's reporter (clients/python) and what its pytest run needs: a change to
  # either file installs again.
  extra=(-r "$reporter/requirements-test.txt" -e "$reporter")
  suffix="-$(cat "$reporter/pyproject.toml" "$reporter/requirements-test.txt" | sha256sum | cut -c1-12)"
fi
venv="$root/$name"
marker="$venv/.installed-$(IFS=-; echo "${pins[*]}")$suffix"
[ -f "$marker" ] && exit 0
mkdir -p "$root/target"
exec 9>"$root/target/$name.lock"
flock 9
[ -f "$marker" ] && exit 0
python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
  echo "ensure-venv: $python not found; install Python 3.10 or newer" >&2
  exit 1
fi
echo "ensure-venv: installing ${pins[*]} into $venv" >&2
[ -x "$venv/bin/pip" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}" >&2
if [ "${#extra[@]}" -gt 0 ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${extra[@]}" >&2
fi
touch "$marker"
