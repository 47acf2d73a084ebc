#!/usr/bin/env bash
# The checks only a CUDA GPU can make, as one command for a session that is lent a GPU machine:
#
#   bash benchmarks/gpu_checks.sh            # from the repository root; logs and JSON under $OUT (or gpu_checks_out/)
#
# It runs on the machine's own PyTorch without installing the project (PYTHONPATH=.), so it needs only torch,
# torchvision, timm, numpy, scikit-learn, tensorboard, PyYAML, filelock, tqdm and Pillow there (no
# segmentation-models-pytorch: none of these tests or benchmarks builds a segmenter). Each part has its own time
# limit (8.5 minutes in all, never yet run on a GPU), and a part that fails or runs out of time does not stop the others.
#  1. The CUDA tests: both DFMGAN stages train under bf16 autocast with channels_last and give back the process's
#     cudnn settings; the samplers (DFMGAN in fp32/bf16/fp16, inpaint, classic) and the online batches match the
#     CPU or run on the device.
#  2. DFMGAN training speed, fp32 against bf16 autocast, each as a ratio to fp32 in the same command.
#  3. DFMGAN sampling speed in fp32/bf16/fp16, eager and compiled (torch.compile), against the two-pass reference.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_checks_out}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 - <<'EOF' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_checks: no CUDA device here (torch sees none); nothing to check")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}")
EOF
failed=()

part() {  # part NAME SECONDS COMMAND...: run one check with its own time limit and log, note a failure
    local name=$1 seconds=$2
    shift 2
    echo "== $name (limit ${seconds}s)"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.log"
    local code=${PIPESTATUS[0]}
    [ "$code" -eq 0 ] || failed+=("$name (exit $code)")
}

part cuda_tests 240 python3 -m pytest -rs -p no:cacheprovider -k cuda \
    tests/test_dfmgan_training.py tests/test_dfmgan_sampling_speed.py tests/test_inpaint_painter.py \
    tests/test_inpaint_masks.py tests/test_generators_classic.py tests/test_online.py
part gan_training_speed 150 python3 benchmarks/gan_training_speed.py --device cuda --configs dfmgan-64,dfmgan-256 \
    --batch 0 --steps 20 --precisions fp32,bf16 --json "$out/gan_training_speed.json"
part generator_throughput 120 python3 benchmarks/generator_throughput.py --device cuda --sweep "64:64 256:16" \
    --precisions fp32,bf16,fp16 --compile --min-seconds 1 --json "$out/generator_throughput.json"

if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu_checks: failed: ${failed[*]}"
    exit 1
fi
echo "gpu_checks: all parts passed"
