#!/usr/bin/env bash
# Create ragline's process work pool and global concurrency limits on the Prefect server at PREFECT_API_URL,
# then deploy every entry of prefect.yaml. Safe to run again: it converges to the same state.
#
#   PREFECT_API_URL=http://127.0.0.1:4200/api bash deployments/setup.sh
#
# RAGLINE_OPENAI_SLOTS / RAGLINE_PINECONE_SLOTS: OpenAI embedding calls / Pinecone upserts in flight at once,
# across every run and worker (default 4 each).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${PREFECT_API_URL:?set PREFECT_API_URL to the Prefect server, e.g. http://127.0.0.1:4200/api}"
export PREFECT_CLI_PROMPT=false

POOL=ragline-process

global_limit() {  # name, slots: create the limit, or set its slots if it exists
  prefect gcl update "$1" --limit "$2" >/dev/null 2>&1 || prefect gcl create "$1" --limit "$2"
}

prefect work-pool create "$POOL" --type process --overwrite
global_limit openai-embeddings "${RAGLINE_OPENAI_SLOTS:-4}"
global_limit pinecone-upserts "${RAGLINE_PINECONE_SLOTS:-4}"
prefect --no-prompt deploy --all --prefect-file prefect.yaml

echo "Start a worker from this checkout: RAGLINE_PROJECT_DIR=$PWD prefect worker start --pool $POOL"
