#!/usr/bin/env bash
# Set up the environment and start the agent server on its embedded default (no keys, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/harken serve "$@"
