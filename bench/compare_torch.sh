#!/usr/bin/env bash
# Per-step speed of v4train against the PyTorch eager baseline (`shared/baseline/v4_torch.py`,
# AdamW, the same V4 config) on this machine's CPU; issue #17. Not part of CI.
#
#   bench/compare_torch.sh RECIPE.toml [--batch B] [--seq S] [--steps N] [--threads T]
#                          [--ns-off] [--fake-quant] [--set KEY=VALUE ...]
#
# It makes a scratch venv with torch (PyPI) on first use, takes the model config from a
# one-step v4train checkpoint of the recipe (so both run exactly the recipe's shape, presets
# resolved), then times `v4train bench` and the baseline's `train` with T threads each
# (default 2; OMP_WAIT_POLICY=PASSIVE), and prints the step times and torch / v4train.
# `--ns-off` runs Muon without Newton–Schulz (`optim.muon.ns_schedule = []`), the closest to
# the baseline's AdamW. Environment: V4TRAIN (binary, default: the release build), V4_BASELINE
# (default ../shared/baseline/v4_torch.py), V4_TORCH_VENV (default ~/.cache/v4train-torch-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[ $# -ge 1 ] || usage 1
case "$1" in -h|--help) usage 0 ;; esac
recipe=$1; shift
batch=2 seq=256 steps=5 threads=2 ns_off=0 fake_quant=false sets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --batch) batch=$2; shift 2 ;;
        --seq) seq=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --ns-off) ns_off=1; shift ;;
        --fake-quant) fake_quant=true; shift ;;
        --set) sets+=(--set "$2"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 1 ;;
    esac
done

target=${CARGO_TARGET_DIR:-$HOME/.cache/v4train-target}
v4train=${V4TRAIN:-$target/release/v4train}
baseline=${V4_BASELINE:-../shared/baseline/v4_torch.py}
venv=${V4_TORCH_VENV:-$HOME/.cache/v4train-torch-venv}
[ -f "$recipe" ] || { echo "no recipe at $recipe" >&2; exit 1; }
[ -f "$baseline" ] || { echo "no baseline at $baseline (set V4_BASELINE)" >&2; exit 1; }
if [ ! -x "$v4train" ]; then
    echo "building $v4train" >&2
    cargo build --release >&2
fi
if ! "$venv/bin/python" -c 'import torch, safetensors' 2>/dev/null; then
    echo "setting up torch in $venv (once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch safetensors numpy >&2
fi

sets+=(--set "train.micro_batch=$batch" --set "train.seq_len=$seq"
       --set "train.fake_quant=$fake_quant" --set "train.expert_fp4_qat=false")
[ "$ns_off" = 1 ] && sets+=(--set "optim.muon.ns_schedule=[]")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The recipe's resolved model config, from a one-step checkpoint.
"$v4train" --threads "$threads" "$recipe" "${sets[@]}" --set train.steps=1 \
    --set schedule.warmup_steps=0 --set schedule.kind=constant --set checkpoint.every=1 \
    --set "checkpoint.dir=$scratch/run" --set train.skip_memory_check=true >/dev/null 2>"$scratch/train.log" \
    || { cat "$scratch/train.log" >&2; exit 1; }
"$venv/bin/python" - "$scratch/run/step-000001/config.json" "$batch" "$seq" >"$scratch/ref.json" <<'PY'
import json, sys
hf = json.load(open(sys.argv[1]))
rs = hf.get("rope_scaling") or {}
ref = {
    "max_batch_size": int(sys.argv[2]), "max_seq_len": max(int(sys.argv[3]), 4096),
    "vocab_size": hf["vocab_size"], "dim": hf["hidden_size"],
    "moe_inter_dim": hf["moe_intermediate_size"], "n_layers": hf["num_hidden_layers"],
    "n_hash_layers": hf["num_hash_layers"], "n_mtp_layers": hf["num_nextn_predict_layers"],
    "n_heads": hf["num_attention_heads"], "n_routed_experts": hf["n_routed_experts"],
    "n_shared_experts": hf["n_shared_experts"], "n_activated_experts": hf["num_experts_per_tok"],
    "score_func": hf["scoring_func"], "route_scale": hf["routed_scaling_factor"],
    "swiglu_limit": hf["swiglu_limit"], "q_lora_rank": hf["q_lora_rank"],
    "head_dim": hf["head_dim"], "rope_head_dim": hf["qk_rope_head_dim"],
    "norm_eps": hf["rms_norm_eps"], "o_groups": hf["o_groups"], "o_lora_rank": hf["o_lora_rank"],
    "window_size": hf["sliding_window"], "compress_ratios": hf["compress_ratios"],
    "compress_rope_theta": hf["compress_rope_theta"], "rope_theta": hf["rope_theta"],
    "rope_factor": rs.get("factor", 1.0), "beta_fast": rs.get("beta_fast", 32),
    "beta_slow": rs.get("beta_slow", 1),
    "original_seq_len": rs.get("original_max_position_embeddings", 0),
    "index_n_heads": hf["index_n_heads"], "index_head_dim": hf["index_head_dim"],
    "index_topk": hf["index_topk"], "hc_mult": hf["hc_mult"],
    "hc_sinkhorn_iters": hf["hc_sinkhorn_iters"], "hc_eps": hf["hc_eps"],
}
json.dump(ref, sys.stdout)
PY
mtp=$(sed -n 's/^mtp_weight *= *\([0-9.e-]*\).*/\1/p' "$recipe" | head -1)

ours=$("$v4train" --threads "$threads" bench "$recipe" "${sets[@]}" --steps "$steps" --json \
    2>"$scratch/bench.log" | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["step_secs"])') \
    || { cat "$scratch/bench.log" >&2; exit 1; }
fq=(); [ "$fake_quant" = true ] || fq=(--no-fake-quant)
theirs=$(OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=PASSIVE "$venv/bin/python" "$baseline" train \
    --config "$scratch/ref.json" --steps $((steps + 1)) --batch "$batch" --seq "$seq" \
    --mtp-weight "${mtp:-0.3}" "${fq[@]}" 2>&1 | tee "$scratch/torch.log" \
    | sed -n 's/^mean step time (excluding step 0): \([0-9.]*\) ms.*/\1/p')
[ -n "$theirs" ] || { cat "$scratch/torch.log" >&2; exit 1; }
"$venv/bin/python" - "$recipe" "$batch" "$seq" "$theirs" "$ours" "$ns_off" <<'PY'
import sys
recipe, b, s, torch_ms, ours_s, ns_off = sys.argv[1:]
t, v = float(torch_ms) / 1e3, float(ours_s)
muon = "Muon without Newton–Schulz" if ns_off == "1" else "Muon"
print(f"{recipe}, {b}x{s} tokens: PyTorch eager (AdamW) {t:.3f} s, v4train ({muon}) {v:.3f} s, "
      f"torch time / v4train time = {t / v:.2f}")
PY
