#!/usr/bin/env bash
# Installs (if missing) the browser the console's test drives: Debian's `chromium` and
# `chromium-driver` (WebDriver), from the distribution's own packages: nothing downloaded
# from elsewhere. Idempotent: what is installed is reused.
#   scripts/browser.sh
# api/tests/console_browser.rs fails loudly (never skips) when either is missing.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "browser: chromium and chromium-driver present" >&2
    exit 0
fi
echo "browser: installing chromium and chromium-driver from Debian" >&2
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
/usr/bin/chromium --version >&2
