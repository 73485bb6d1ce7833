#!/usr/bin/env bash
# The GPU checks of docs/benchmarks.md in one run, on a machine with one CUDA GPU (not a test: CI has no GPU).
#
# Needs PyTorch with CUDA and the project's other packages (DALI, webdataset, pydantic) importable, the reference
# data in $R3FA_DATA, and a shard set built here or elsewhere (for a GPU machine without network or those
# packages, bench/gpu_payload.sh packs all three):
#     .venv/bin/r3fa shards build configs/mix/demo.yaml --out /tmp/demo-shards --workers 0
#     R3FA_DATA=../shared/data bench/gpu.sh /tmp/demo-shards /tmp/gpu-out    # logs: /tmp/gpu-out/*.log
#     R3FA_DATA=../shared/data bench/gpu.sh /tmp/demo-shards /tmp/gpu-out fit   # some steps only
#
# Steps (each under its own time limit; a failed step is reported and the next one runs):
#   env       GPU, driver, torch and DALI versions
#   eval      3DDFA-V2 mb05 on all of AFLW2000-3D on the CPU and on the GPU: NMEs, largest per-image difference,
#             ms/image
#   train     MobDenseNet training step images/s, fp32 vs bf16 autocast, channels-last or not (bench_train.py)
#   models    inference ms/image of every registered backbone (bench_models.py)
#   loaders   DALI with nvJPEG ("mixed") decode and the PyTorch fallback vs the training step (bench_loaders.py)
#   decode    nvJPEG's decoded images vs OpenCV's, in grey levels (decode_agreement.py)
#   fit       the demo training config on the GPU through torchrun (NCCL, 1 process), twice at once: run a to
#             the end, then its NME on fold 1; run b killed part-way (SIGKILL to torchrun and its worker) and
#             resumed: its weights must equal run a's
set -u
shards=${1:?usage: bench/gpu.sh SHARDS OUT [STEP...]}
out=${2:?usage: bench/gpu.sh SHARDS OUT [STEP...]}
only=" ${*:3} "
want() { [[ "$only" == "  " || "$only" == *" $1 "* ]]; }
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run COMMAND with a limit, log to OUT/NAME.log, report its exit status
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name: $*"
    timeout -s KILL "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.log"
    echo "== $name: exit $rc after $((SECONDS - start)) s"
}

want env && step env 60 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv && $py -c '
import torch, nvidia.dali as dali, platform
print(\"python\", platform.python_version(), \"torch\", torch.__version__, \"cuda\", torch.version.cuda,
      \"cudnn\", torch.backends.cudnn.version(), \"dali\", dali.__version__, torch.cuda.get_device_name(0))'"
want eval && step eval 240 "$py" bench/gpu_eval.py "$R3FA_DATA/3ddfa_v2/weights/mb05_120x120.pth" --out "$out/eval-mb05"
want train && step train 240 "$py" bench/bench_train.py --device cuda --batch 128 --steps 50
want models && step models 240 "$py" bench/bench_models.py --threads 16
want loaders && step loaders 240 "$py" bench/bench_loaders.py "$shards" --device cuda --threads 4 --epochs 3 \
    --train-steps 50
want decode && step decode 120 "$py" bench/decode_agreement.py "$shards" --device cuda

want fit || exit 0
# the demo training config on the GPU, one torchrun process; --standalone: each run its own rendezvous port
fit=("$py" -m torch.distributed.run --standalone --nproc-per-node 1 -m r3fa.training
     --config "${FIT_CONFIG:-configs/train/demo.yaml}" --shards "$shards" --no-progress)
step fit-a 300 "${fit[@]}" --out "$out/fit-a" &
run_a=$!
"${fit[@]}" --out "$out/fit-b" >"$out/fit-b-killed.log" 2>&1 &
run_b=$!
sleep "${KILL_AFTER:-45}"
pkill -KILL -f -- "--out $out/fit-b( |$)"  # torchrun and its worker (a session of its own: not in our group)
wait $run_b
echo "== fit-b-killed: exit $? after $(grep -c 'train epoch=' "$out/fit-b-killed.log") epochs"
step fit-b-resumed 300 "${fit[@]}" --out "$out/fit-b"
wait $run_a
step fit-a-eval 120 "$py" bench/gpu_eval.py "$out/fit-a/model.pth" --fold 1 --n-folds 2 --devices cuda cpu \
    --out "$out/eval-fit-a"
step fit-compare 60 "$py" -c "
import sys, torch
from r3fa.checkpoint import load_checkpoint
a, b = (load_checkpoint(p)['state_dict'] for p in sys.argv[1:3])
differ = [k for k in a if not torch.equal(a[k], b[k])]
print({'tensors': len(a), 'differ': len(differ), 'first': differ[:3]})
sys.exit(1 if differ or a.keys() != b.keys() else 0)" "$out/fit-a/model.pth" "$out/fit-b/model.pth"
