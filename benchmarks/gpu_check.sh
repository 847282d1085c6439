#!/usr/bin/env bash
# The GPU check: run it once on a machine with a CUDA GPU, in the environment the project is
# installed in (pip install '.[test]', which brings Ray); it installs nothing. About 8 minutes
# on one modern GPU. Each benchmark prints its figures beside their targets (PASS or MISS):
#   1. extraction on SmolLM2 on cuda, float32 and bfloat16: speed against the LESS reference
#      path with TRAK's projector (>= 20x), time against a plain batched forward-backward
#      (<= 2x), fidelity (Spearman >= 0.95), peak memory of a 16 x 256 block with logits kept
#      at response positions against full logits (<= 0.5x);
#   2. scoring on cuda: throughput against the GPU's matmul peak, checksum share;
#   3. a 2-worker featurize on Ray on the one GPU (each actor half of it) against this
#      process: the same bytes, and the pass's overhead.
# Usage: benchmarks/gpu_check.sh [log file]   (default: gpu_check.log beside this script)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log="${1:-$here/gpu_check.log}"

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU is visible to torch here (torch.cuda.is_available() is False);" \
        "run it on a machine with one" >&2
    exit 2
fi
python -c "import ray" 2>/dev/null || {
    echo "gpu_check: Ray is not installed; pip install '.[ray]' (or '.[test]') first" >&2
    exit 2
}

{
    date -u
    python -c "import torch; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
    for dtype in float32 bfloat16; do
        echo "== 1. extraction, SmolLM2, $dtype on cuda"
        python "$here/bench_gradients.py" --smollm2 --device cuda --dtype "$dtype" \
            --examples 256 --reference-examples 32 --repeats 3
    done
    echo "== 2. scoring on cuda"
    python "$here/bench_scoring.py" --device cuda
    echo "== 3. featurize on Ray, 2 workers on one GPU"
    python "$here/bench_executors.py" --model smollm2 --device cuda --records 512 \
        --workers 2 --backends inprocess,ray
} 2>&1 | tee "$log"
echo "gpu_check: figures written to $log"
