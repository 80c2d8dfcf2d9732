#!/bin/sh
# Browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
# Installs it when missing and we are root; otherwise the e2e tests skip themselves.
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) && exit 0
fi
exit 1
