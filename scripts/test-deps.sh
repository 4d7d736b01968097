#!/usr/bin/env bash
# System packages the tests use (real peers, not mocks). Installs only what is missing.
set -euo pipefail
need=(); compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
command -v sipp >/dev/null || need+=(sip-tester)  # sipp: the SIP peer of tests/sip
command -v chromium >/dev/null || need+=(chromium)  # the browser of tests/webrtc
# (filled in as tests start needing real components: redis-server, sip-tester, chromium, ...)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}";
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}"; fi
fi
