#!/usr/bin/env bash
# Reproduce the "Echo load" figures of docs/performance.md: harken against pipecat 1.14, echo
# and vad scenarios, server pinned to core 0 and the load generator to core 1. Writes
# docs/performance.md (that section only), docs/img/echo-load-*.png and .bench/echo.json.
# Extra arguments go to `harken bench echo` (e.g. --duration 10 --calls 50,100).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,piper
exec .venv/bin/harken bench echo --scenario echo,vad --baseline pipecat \
  --calls 25,50,75,100,200,300,400,500 --stop-p99-ms 1000 --report --json .bench/echo.json "$@"
