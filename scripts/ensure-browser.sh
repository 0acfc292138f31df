#!/usr/bin/env bash
# Installs what the browser test (tests/tests/status_page.rs) needs: Debian's chromium at
# /usr/bin/chromium and playwright-core in tests/browser/node_modules (from its lock file).
# Idempotent and safe to run from several processes at once (a lock serialises it).
#
# Under CI=true any failure fails; elsewhere it warns loudly and exits 0, and the tests
# that need the browser then say NOT RUN instead of passing quietly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
browser_dir="$root/tests/browser"
chromium="/usr/bin/chromium"

in_ci() { [ "${CI:-}" = "true" ] || [ "${CI:-}" = "1" ]; }

give_up() {
  if in_ci; then
    echo "ensure-browser: $1 (CI=true: this is an error)" >&2
    exit 1
  fi
  {
    echo
    echo "!!!!!!!! ensure-browser: $1."
    echo "!!!!!!!! The status page's browser test will be NOT RUN."
    echo
  } >&2
  exit 0
}

mkdir -p "$root/target"
exec 9>"$root/target/.browser.lock"
flock 9

if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    give_up "$chromium is missing and apt-get as root is not available to install it"
  fi
  echo "ensure-browser: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine has no package lists yet; update only when the install needs it.
  if ! apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; then
    apt-get update -qq >&2 || give_up "apt-get update failed"
    apt-get install -y -qq --no-install-recommends chromium >&2 \
      || give_up "apt-get install chromium failed"
  fi
  [ -x "$chromium" ] || give_up "apt-get installed chromium but $chromium is missing"
fi

command -v node >/dev/null 2>&1 || give_up "node is not installed"
command -v npm >/dev/null 2>&1 || give_up "npm is not installed"

# npm ci again only when the lock file changed since the last install.
marker="$browser_dir/node_modules/.installed-lock"
if [ -f "$marker" ] && cmp -s "$marker" "$browser_dir/package-lock.json"; then
  exit 0
fi
echo "ensure-browser: npm ci in tests/browser" >&2
(cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error >&2) \
  || give_up "npm ci in tests/browser failed"
cp "$browser_dir/package-lock.json" "$marker"
