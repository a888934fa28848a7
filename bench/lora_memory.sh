#!/usr/bin/env bash
# Peak memory of fine-tuning one model three ways (issue #15): full fine-tuning, LoRA over the
# base dequantized to f32, and LoRA over the base kept as stored (FP8 projections, FP4 routed
# experts). Model: bench/lora-wide.toml (8 layers × 64 experts). Not part of CI.
#
#   bench/lora_memory.sh [WORK_DIR]      (default: runs/lora-memory)
#
# It trains the model one step from scratch, exports it in the release layout (FP8/FP4), then
# runs `v4train bench` on each mode and prints, next to the base's stored bytes: the peak RSS of
# the process; the bytes of the base weights as held (stored FP8/FP4 at their size, the rest
# f32) and of the adapters, computed from the loaded model; what the loaded model holds (RSS
# after loading minus before); and what a step adds on top (activations, gradients, optimizer
# state, transients: peak − model − before). Environment: V4TRAIN (binary, default: the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/lora-memory}
bin=${V4TRAIN:-${CARGO_TARGET_DIR:-target}/release/v4train}
mkdir -p "$work"
if [ ! -f "$work/base/config.json" ]; then
    "$bin" bench/lora-wide.toml --set "checkpoint.dir=$work/pre" --overwrite >/dev/null
    "$bin" export --model "$work/pre/step-000001" --out "$work/base" --dtype fp8 --force >/dev/null
fi
stored=$(cat "$work"/base/*.safetensors | wc -c)
recipe="$work/mode.toml"
run() { # name, extra recipe text
    sed -e '/^\[model\]/,/^\[data\]/{/^\[data\]/!d}' bench/lora-wide.toml >"$recipe"
    printf '[model]\ndir = "%s"\n%s\n' "$work/base" "$2" >>"$recipe"
    local json
    json=$("$bin" bench "$recipe" --set "checkpoint.dir=$work/$1" --steps 2 --warmup 1 --json 2>/dev/null)
    python3 - "$1" "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
peak, model, before = r["peak_memory"][0], r["model_memory"], r["memory_before_load"]
print("%-18s %8.0f %8.0f %8.0f %8.0f %8.0f %8.2f" % (sys.argv[1], peak / 1e6,
      r["base_bytes"] / 1e6, r["adapter_bytes"] / 1e6, model / 1e6,
      (peak - model - before) / 1e6, r["step_secs"]))
PY
}
printf 'base stored bytes: %d MB\n' "$((stored / 1000000))"
printf '%-18s %8s %8s %8s %8s %8s %8s\n' mode "peak MB" "base MB" "LoRA MB" \
    "model MB" "step MB" "s/step"
run full ""
run lora-f32-base $'[finetune]\nmode = "lora"\nbase = "f32"\n[lora]\nrank = 16\nalpha = 32'
run lora-stored-base $'[finetune]\nmode = "lora"\nbase = "stored"\n[lora]\nrank = 16\nalpha = 32'
