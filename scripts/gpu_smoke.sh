#!/usr/bin/env bash
# Paper-profile plumbing check on one CUDA GPU, for a machine without ImageNet or the pretrained files.
#
# What it runs, at the paper's model sizes (ViT-B tokenizer, 2 × 286 tokens, d17/w1088 generator), bf16:
#   1. batch-1 sampling latency of the four generator set-ups (fp32, bf16 autocast, and bf16 through the compiled
#      sampler: CUDA graphs over a static KV cache, issue 13.5) and the paper FLOPs;
#   2. tokenizer encode / decode / full training-step throughput at a per-GPU batch;
#   3. `train-tokenizer` and `train-generator --profile paper` for a few steps.
# Every pretrained network (DINOv2-B/S, VGG16) is a RANDOM stand-in written to a temp folder, and the data
# is the emoji set in ImageFolder layout resized to 256 px: the numbers are speed, memory and "losses go
# down", never quality. Usage: bash scripts/gpu_smoke.sh [out_dir]
# env: STEPS (≥ 6), BATCH, GEN_BATCH (training), REPEATS (timed samples per layout), BENCH=0 (skip 1-2),
#      EXTRA (more config overrides)
set -euo pipefail
out=${1:-${OUT:-runs/gpu-smoke}}
mkdir -p "$out"
tmp=$(mktemp -d)
export IMAGEFOLDER_WEIGHTS=$tmp/weights TORCH_HOME=$tmp/torch IMAGEFOLDER_IMAGENET=${IMAGEFOLDER_IMAGENET:-data/emoji}
export PYTHONUNBUFFERED=1
STEPS=${STEPS:-40} BATCH=${BATCH:-32} GEN_BATCH=${GEN_BATCH:-64} REPEATS=${REPEATS:-10}
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$out/gpu.txt" || true

$py - <<'PY'
import os, timm, torch, torchvision
from safetensors.torch import save_file
from imagefolder.pretrained import KNOWN, torch_hub_dir, weights_dir
weights_dir().mkdir(parents=True); torch_hub_dir().mkdir(parents=True)
for known in KNOWN.values():
    if known.timm_arch:
        save_file(timm.create_model(known.timm_arch, pretrained=False, num_classes=0).state_dict(), str(weights_dir() / known.file))
torch.save(torchvision.models.vgg16().state_dict(), torch_hub_dir() / KNOWN["vgg16"].file)
print("random stand-ins:", sorted(os.listdir(weights_dir())), os.listdir(torch_hub_dir()))
PY

[ "${BENCH:-1}" = 1 ] && $py - "$out" "$BATCH" "$REPEATS" <<'PY' 2>&1 | tee "$out/bench.txt"
import sys, torch, pandas as pd
from imagefolder import bench, config
out, batch, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = config.profile("paper")
dev = "cuda" if torch.cuda.is_available() else "cpu"
pd.set_option("display.width", 250); pd.set_option("display.max_columns", None)
cols = ["layout", "steps", "positions", "tokens", "latency_s", "latency_p10_s", "latency_p90_s", "latency_ratio", "flops", "device"]
for amp, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):  # compiled: CUDA graphs, static KV cache
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp == "bf16" and dev == "cuda"):
        df = bench.sampling_benchmark(cfg, warmup=min(3, repeats - 1), repeats=repeats, device=dev, compiled=compiled)
    df["precision"] = amp
    tag = amp + ("_compiled" if compiled else "")
    df.to_csv(f"{out}/sampling_{tag}.csv", index=False)
    print(f"## sampling, batch 1, KV cache, CFG {cfg.generator.cfg_scale}, paper sizes, {tag}\n"
          f"{df[cols + ['first_call_s']].to_string(index=False)}")
paper = bench.paper_flops(device=dev)
print(paper[["model", "positions", "gflops_per_image", "flops_vs_VAR"]].to_string(index=False)); print(paper.attrs["verdict"])
tok = bench.tokenizer_benchmark(cfg, dev, batch=batch)
tok.to_csv(f"{out}/tokenizer_throughput.csv", index=False)
print(f"## tokenizer, paper sizes, batch {batch}, bf16 training step\n{tok.drop(columns='what').to_string(index=False)}")
if dev == "cuda":
    print(f"max memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
PY

common=(run_dir=$tmp/runs data.num_workers=8 ${EXTRA:-})
tok=(train_tokenizer.steps=$STEPS train_tokenizer.batch_size=$BATCH train_tokenizer.warmup_steps=5
     train_tokenizer.ckpt_every=$((STEPS / 2)) train_tokenizer.log_every=5 tokenizer.disc_start=$((STEPS / 2)))
gen=(train_generator.steps=$STEPS train_generator.batch_size=$GEN_BATCH train_generator.warmup_steps=5
     train_generator.ckpt_every=$((STEPS / 2)) train_generator.log_every=5)
$py -m imagefolder train-tokenizer --profile paper "${common[@]}" "${tok[@]}" 2>&1 | tee "$out/train_tokenizer.log" | tail -n 5
$py -m imagefolder train-generator --profile paper "${common[@]}" "${tok[@]}" "${gen[@]}" 2>&1 | tee "$out/train_generator.log" | tail -n 5
for kind in tokenizer generator; do cat "$tmp"/runs/paper/$kind/*/history.jsonl > "$out/history_$kind.jsonl"; done
rm -rf "$tmp"
