#!/usr/bin/env bash
# Data-parallel training benchmark (benchmark.py --train) on one node with torchrun.
#   bash tools/analysis_tools/dist_benchmark.sh CONFIG GPUS --train [extra args of benchmark.py]
# PORT=29500 sets the rendezvous port; rank 0 prints and writes --json.
set -e
CONFIG=$1
GPUS=$2
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
ROOT="$(dirname "$0")/../.."

PYTHONPATH="$ROOT":${PYTHONPATH:-} \
python -m torch.distributed.run \
    --nnodes=1 --node_rank=0 --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$(dirname "$0")/benchmark.py" "$CONFIG" --launcher pytorch "${@:3}"
