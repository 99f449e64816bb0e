#!/usr/bin/env bash
# `az batch` against drover-api: the Azure CLI's Batch basics (pool, job, tasks, wait, output,
# delete) on the local services. Not part of CI: azure-cli is large (it is pip-installed into
# target/tools/azure-cli the first time, a few minutes).
# Needs drover-api and drover-monitor --autoscale running for $DROVER_ACCOUNT, as in the
# README's "Use the Azure Batch SDKs and az batch", and DROVER_API_KEY set.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
: "${DROVER_API_KEY:?set DROVER_API_KEY to the key drover-api serves with}"
ACCOUNT="${DROVER_ACCOUNT:-default}"
ENDPOINT="${DROVER_API_URL:-http://127.0.0.1:8180}"
VENV="$ROOT/target/tools/azure-cli"

if [[ ! -x "$VENV/bin/az" ]]; then
  echo "az-batch: installing azure-cli into target/tools/azure-cli (the first time: a few minutes)" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check azure-cli
fi
az() { "$VENV/bin/az" "$@" --account-name "$ACCOUNT" --account-key "$DROVER_API_KEY" --account-endpoint "$ENDPOINT"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/pool.json" <<'JSON'
{"id": "az-pool", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 1, "taskSlotsPerNode": 2,
 "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical", "offer": "0001-com-ubuntu-server-jammy",
   "sku": "22_04-lts", "version": "latest"}, "nodeAgentSKUId": "batch.node.ubuntu 22.04"}}
JSON
step() { printf "\n==> az batch %s\n" "$*" >&2; }
step "pool create"; az batch pool create --json-file "$work/pool.json" -o none
step "job create"; az batch job create --id az-job --pool-id az-pool -o none
for n in 1 2 3; do
  step "task create t$n"; az batch task create --job-id az-job --task-id "t$n" --command-line "/bin/sh -c 'echo hello from az $n'" -o none
done
step "task list"; az batch task list --job-id az-job --query "[].{id:id, state:state}" -o table
step "job task-counts show, until the three completed"
until [[ "$(az batch job task-counts show --job-id az-job --query 'taskCounts.completed' -o tsv)" == 3 ]]; do sleep 1; done
step "task file download"; az batch task file download --job-id az-job --task-id t2 --file-path stdout.txt --destination "$work/t2.txt"
cat "$work/t2.txt"
step "job delete"; az batch job delete --job-id az-job --yes
step "pool delete"; az batch pool delete --pool-id az-pool --yes
echo "az-batch: passed" >&2
