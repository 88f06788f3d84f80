#!/usr/bin/env bash
# README command 1: set up .venv and run the main job (the demo on the built-in synthetic market).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/conceptalpha demo "$@"
