#!/usr/bin/env bash
# Reproduce the "Echo load" figures of docs/performance.md: harken against pipecat 1.14, server
# pinned to core 0 and the load generator to core 1, both under SCHED_FIFO (--realtime, needs
# root) so that other processes on a shared machine cannot preempt them. harken runs every level
# (--keep-going: a level it or the generator failed is still measured and marked); pipecat
# stops after the first level it breaks (p99 over 1 s), as its later levels only take longer.
# Writes docs/performance.md (that section only; a scenario not run keeps its tables),
# docs/img/echo-load-*.png and .bench/echo.json.
# SCENARIOS=echo (or vad) runs one scenario; CALLS overrides the levels; extra arguments go to
# both `harken bench echo` runs (e.g. --duration 10).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev,piper
SCENARIOS=${SCENARIOS:-echo,vad}
CALLS=${CALLS:-25,50,100,200,300,400,500,600}
.venv/bin/harken bench echo --scenario "$SCENARIOS" --systems harken --keep-going --realtime \
  --calls "$CALLS" --json .bench/echo-harken.json "$@"
.venv/bin/harken bench echo --scenario "$SCENARIOS" --systems pipecat --stop-p99-ms 1000 \
  --realtime --calls "$CALLS" --json .bench/echo-pipecat.json "$@"
exec .venv/bin/harken bench echo --from-json .bench/echo-harken.json,.bench/echo-pipecat.json \
  --report --json .bench/echo.json
