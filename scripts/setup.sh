#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install harken with the given extras, e.g. `scripts/setup.sh dev`.
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
py=""
for cand in python3.11 python3.12 python3.13 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    py="$cand"; break
  fi
done
[ -n "$py" ] || { echo "harken needs Python 3.11 or newer" >&2; exit 1; }
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
.venv/bin/python -m pip install -q -e "$spec"
# Model files shipped in wheels whose own dependencies we must not install (silero-vad requires
# torch; pipecat-ai is only the carrier of the Smart Turn v3.2 ONNX file): --no-deps, pinned.
.venv/bin/python -m pip install -q --no-deps "silero-vad==6.2.3" "pipecat-ai==1.14.0"
