#!/usr/bin/env bash
# The whole GPU check, as one command for a GPU machine without network access (about 5 minutes on an H100 with
# `--regression-repeats 3 --repeats 2`).
#   here:        pip download --no-deps --only-binary=:all: --python-version 3.12 --platform any -d wheels \
#                  jsonargparse docstring_parser typeshed_client    # the GPU machine may lack these three
#   the device:  bash benchmarks/gpu_check.sh [run.py arguments]  # carry wheels/ (git-ignored) along
# Prints the versions and the GPU, then: 3 epochs of CIFAR10 on device-resident data in both memory
# layouts, Lightning DDP on the GPU, and the whole benchmark with the hand loops on CUDA; all of it lands in
# $OUT/gpu_check.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
exec > >(tee "${OUT:-/tmp}/gpu_check.txt") 2>&1
if ! python3 -c "import jsonargparse, docstring_parser, typeshed_client" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_check.sh: no CUDA device on this machine; run it on a machine with a GPU." >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export PYTHONWARNINGS=ignore PYTHONUNBUFFERED=1
for layout in true false; do
  echo "== 3 epochs of CIFAR10 on the device, channels_last=$layout"
  python3 benchmarks/run.py --accelerator gpu --workloads cifar10_3_epochs --repeats 3 \
    --cifar10-args="--model.init_args.channels_last=$layout"
done
echo "== DDP through NCCL on the one GPU"
runs=$(mktemp -d)
timeout 180 python3 -m lit_tutorial fit --config configs/step6_optim.yaml --config configs/overlays/gpu.yaml \
  --trainer.strategy=ddp --trainer.enable_progress_bar=false --trainer.default_root_dir="$runs" 2>&1 | tail -4
ls -R "$runs" | head -12
echo "== the whole benchmark"
python3 benchmarks/run.py --accelerator gpu "$@"
