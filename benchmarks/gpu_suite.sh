#!/usr/bin/env bash
# The GPU figures of issue 13 in one command, for a session that is lent a GPU (the `device` tool's
# `run`). Never part of the tests: CI has no GPU. The device image has torch, triton, numpy, scipy,
# scikit-learn, safetensors, huggingface-hub ... but not diffusers (+ its importlib-metadata) or
# torch-fidelity; fetch their wheels on this machine first:
#     bash benchmarks/gpu_suite.sh --fetch-wheels      # into .whl/ (add /.whl/ to .git/info/exclude)
# then on the device, one call under its 10-minute limit:
#     run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
# A rerun of some sections only (the second of the two runs a lent GPU allows):
#     run(command="SECTIONS='ssm dist' BUDGET=300 bash benchmarks/gpu_suite.sh", carry=[".whl"])
#
# Sections, in priority order (issue 13's GPU items):
#   facts   versions, GPU, flash SDPA, torch.compile smoke, mamba-ssm import (gpu_facts.py)
#   dit     1. DiT-XL/2 training at 256px latents, bf16: eager as training.py runs it, then compiled with
#              fused AdamW, foreach-lerp EMA and flash SDPA forced, profiled; images/s and MFU at PEAK
#   sample  3. 50K DiT-XL/2 samples (250 steps, cfg 1.5) extrapolated from a timed batch, VAE decode;
#              VAE encode images/s in fp32 and bf16 (the latent stage's bf16 option)
#   ssm     2. DiS-H/2 and DiffuSSM-XL at 256px: bf16 step time and finiteness over 100 steps with our
#              scan, with mamba-ssm's kernels where they import, and compiled
#   dist    4. 2 processes on the one GPU: DDP over NCCL (NCCL may refuse two ranks on one device: the
#              error is the finding), DDP and FSDP2 over gloo; activation checkpointing on DiT-XL/2
# Every benchmark prints JSON lines; each line lands in $OUT/results.jsonl tagged with its section and
# command, and every command's output tail (errors included) in $OUT/log.txt. A failing or timed-out
# command is recorded and the suite goes on. BUDGET (seconds, default 540) caps the whole run: each
# command gets min(its own timeout, what is left) and is skipped (recorded) when under 15 s are left.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
        diffusers==0.42.1 torch-fidelity==0.4.0 importlib-metadata==10.2.0
    exit
fi
OUT=${OUT:-results/gpu}
SECTIONS=${SECTIONS:-facts dit sample ssm dist}
BUDGET=${BUDGET:-540}
PEAK=${PEAK:-790}   # dense bf16 TFLOP/s used for MFU (issue 13)
DRY=${DRY_RUN:-0}   # 1: print the commands without running them (a syntax check anywhere)
DEVICE=${DEVICE:-cuda}  # cpu: the same commands on a CPU (they time out: a check of the suite itself)
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null && [[ "$DRY" != 1 ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        || echo "wheel install failed" >> "$OUT/log.txt"
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export DIFFZOO_KERNEL_DIR=/tmp/diffzoo-kernels
START=$SECONDS

# bench SECTION TIMEOUT CMD...: run CMD under min(TIMEOUT, budget left); tag its JSON lines.
bench() {
    local section=$1 limit=$2; shift 2
    local left=$((BUDGET - (SECONDS - START)))
    (( limit > left )) && limit=$left
    local tag="{\"section\": \"$section\", \"command\": \"$*\""
    if (( limit < 15 )); then
        echo "$tag, \"skipped\": \"budget\"}" >> "$OUT/results.jsonl"
        return
    fi
    echo "== [$section] $* (timeout ${limit}s, t=$((SECONDS - START))s)" | tee -a "$OUT/log.txt"
    if [[ "$DRY" == 1 ]]; then
        return
    fi
    local t0=$SECONDS out rc
    out=$(timeout --kill-after=10 "$limit" "$@" 2>&1)
    rc=$?
    printf '%s\n' "$out" | tail -n 25 >> "$OUT/log.txt"
    local found=0
    while IFS= read -r line; do
        [[ "$line" == "{"*"}" ]] || continue
        found=1
        echo "$tag, \"rc\": $rc, \"result\": $line}" >> "$OUT/results.jsonl"
    done <<< "$out"
    if (( rc != 0 || found == 0 )); then
        local why="exit $rc"; (( rc == 124 || rc == 137 )) && why="timed out after ${limit}s"
        echo "$tag, \"rc\": $rc, \"failed\": \"$why\", \"seconds\": $((SECONDS - t0))}" >> "$OUT/results.jsonl"
    fi
}
wants() { [[ " $SECTIONS " == *" $1 "* ]]; }

PY=${PYTHON:-python3}  # the device image: python3 has torch
TRAIN=(benchmarks/bench_dit.py --device "$DEVICE" --dtype bf16 --input-size 32 --peak-tflops "$PEAK")
DIST=(-m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/bench_distributed.py --device "$DEVICE")

if wants facts; then
    if [[ "$DRY" != 1 ]]; then
        command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$OUT/log.txt" 2>&1
        timeout 60 $PY benchmarks/gpu_facts.py > "$OUT/facts.json" 2>> "$OUT/log.txt" \
            || echo '{"section": "facts", "failed": "gpu_facts.py"}' >> "$OUT/results.jsonl"
    fi
fi
if wants dit; then
    bench dit 60 $PY "${TRAIN[@]}" --model DiT-XL/2 --batch 64 --steps 10 --warmup 3 --ema loop
    bench dit 150 $PY "${TRAIN[@]}" --model DiT-XL/2 --batch 64 --steps 20 --warmup 3 --compile --fused-adamw \
        --ema foreach --sdpa flash --profile "$OUT/dit_profile.txt"
fi
if wants sample; then
    bench sample 75 $PY benchmarks/bench_sample.py --device "$DEVICE" --model DiT-XL/2 --batch 256 --cfg-scale 1.5 \
        --dtype bf16 --steps 10 --vae random-sd-vae --vae-dtype bfloat16
    bench sample 45 $PY benchmarks/bench_latents.py --device "$DEVICE" --batch 64 --repeats 5
fi
if wants ssm; then
    bench ssm 75 $PY "${TRAIN[@]}" --model DiS-H/2 --batch 4 --steps 100 --warmup 2 --scan ours
    bench ssm 60 $PY "${TRAIN[@]}" --model DiffuSSM-XL --batch 4 --steps 100 --warmup 2
    if [[ "$DRY" == 1 ]] || $PY -c "from diffzoo.models.mamba import cuda_selective_scan as f; raise SystemExit(f() is None)"; then
        bench ssm 60 $PY "${TRAIN[@]}" --model DiS-H/2 --batch 4 --steps 100 --warmup 2 --scan mamba-ssm
    else
        echo '{"section": "ssm", "skipped": "mamba_ssm does not import"}' >> "$OUT/results.jsonl"
    fi
    bench ssm 60 $PY "${TRAIN[@]}" --model DiffuSSM-XL --batch 4 --steps 10 --warmup 2 --compile
    bench ssm 60 $PY "${TRAIN[@]}" --model DiS-H/2 --batch 4 --steps 10 --warmup 2 --scan ours --compile
fi
if wants dist; then
    bench dist 30 $PY "${DIST[@]}" --backend nccl --parallel ddp --model DiT-B/2 --batch 32 --steps 5
    bench dist 45 $PY "${DIST[@]}" --backend gloo --parallel ddp --model DiT-B/2 --batch 32 --steps 5
    bench dist 45 $PY "${DIST[@]}" --backend gloo --parallel fsdp --model DiT-B/2 --batch 32 --steps 5
    bench dist 45 $PY "${TRAIN[@]}" --model DiT-XL/2 --batch 64 --steps 5 --warmup 2 --grad-checkpointing --ema loop
fi
echo "done in $((SECONDS - START))s; results in $OUT" | tee -a "$OUT/log.txt"
