#!/usr/bin/env bash
# Set up the environment and start the agent server on its embedded default (no keys, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
# the piper extra (GPL-3.0): the demo speaks with Piper; without it harken uses espeak-ng
scripts/setup.sh piper
exec .venv/bin/harken serve "$@"
