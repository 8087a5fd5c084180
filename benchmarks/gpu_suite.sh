#!/usr/bin/env bash
# The GPU figures BENCHMARKS.md still lacks, in one command for a session that is lent a GPU (the
# `device` tool). Never part of the tests: CI has no GPU. Prepare the wheels the device image lacks
# (diffusers, its importlib-metadata, torch-fidelity; it has torch, triton, numpy, scipy, scikit-learn, safetensors,
# huggingface-hub ...) on this machine first:
#     bash benchmarks/gpu_suite.sh --fetch-wheels      # into .whl/ (add /.whl/ to .git/info/exclude)
# then on the device (one call, under its 10-minute limit):
#     run(command="bash benchmarks/gpu_suite.sh", carry=[".whl"])
# Each benchmark prints JSON lines into $OUT/<name>.log (8 files at most come back).
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
        diffusers==0.42.1 torch-fidelity==0.4.0 importlib-metadata==10.2.0
    exit
fi
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.log"
python3 -c "import torch; print('torch', torch.__version__)" >> "$OUT/gpu.log"
PEAK=989  # dense bf16 TFLOP/s of an H100 SXM (an H200 has the same)
bench() { local name=$1; shift; echo "== $name $*" | tee -a "$OUT/$name.log"; timeout 150 python3 "$@" 2>&1 | tail -n 40 >> "$OUT/$name.log"; }
bench dit benchmarks/bench_dit.py --model DiT-XL/2 --device cuda --dtype bf16 --batch 64 --steps 10 --peak-tflops $PEAK
bench dit benchmarks/bench_dit.py --model DiT-XL/2 --device cuda --dtype bf16 --batch 64 --steps 10 --compile --peak-tflops $PEAK
bench latents benchmarks/bench_latents.py --device cuda --batch 64 --repeats 10
bench sample benchmarks/bench_sample.py --device cuda --model DiT-XL/2 --batch 256 --cfg-scale 1.5 --dtype bf16 --steps 10 --vae random-sd-vae
bench sample benchmarks/bench_sample.py --device cuda --model DiT-XL/2 --batch 256 --cfg-scale 1.5 --steps 10
bench moe benchmarks/bench_moe.py --device cuda --dtype bfloat16 --tokens 32768 --dim 1152
bench loader benchmarks/bench_loader.py
echo "results in $OUT"
