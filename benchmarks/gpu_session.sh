#!/usr/bin/env bash
# Everything a session lent a GPU should run, as one command (about 5 minutes on an H100).
#   here:        pip download -d wheels "jsonargparse[signatures]"   # the lent machine has no jsonargparse
#   the device:  bash benchmarks/gpu_session.sh                       # carry wheels/ (git-ignored) along
# Prints the versions and the GPU, then the benchmark with the hand loops on CUDA and the project with
# accelerator=gpu, plus the 3-epoch device-resident CIFAR10 run (the GPU bar); a copy lands in $OUT if set.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=$(python - <<'PY'
import importlib.util
wanted = ["jsonargparse", "docstring_parser", "typeshed_client", "torchvision", "torchmetrics", "tensorboard", "matplotlib"]
print(" ".join(m for m in wanted if importlib.util.find_spec(m) is None))
PY
)
if [ -n "$missing" ]; then  # beyond jsonargparse's, download the wheels it names into wheels/ as well
  echo "installing from wheels/: $missing"
  pip install -q --no-index --find-links wheels "jsonargparse[signatures]" ${missing//_/-}
fi
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_session.sh: no CUDA device on this machine; run it on the lent GPU machine." >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
out=${OUT:-/tmp}/gpu_benchmark.txt
PYTHONWARNINGS=ignore python benchmarks/run.py --accelerator gpu "$@" 2>&1 | tee "$out"
