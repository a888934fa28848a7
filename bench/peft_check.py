#!/usr/bin/env python
"""Load a DeepSeek-V4 checkpoint in the *release* layout (config.json + model*.safetensors with
release tensor names such as `layers.0.attn.wq_a.weight`) with Hugging Face transformers
(`DeepseekV4ForCausalLM`, float32, CPU), optionally attach a PEFT LoRA adapter with
`PeftModel.from_pretrained`, run one forward pass on the given token ids and write the logits.

    python peft_check.py --model DIR --adapter DIR --ids ids.json --out logits.safetensors
    python peft_check.py --model DIR --no-adapter --ids ids.json --out base_logits.safetensors

ids.json: a JSON list of lists of ints, [batch, seq] (a flat list is taken as batch 1).
Output: safetensors file with one float32 tensor "logits" of shape [batch, seq, vocab].

With an adapter, the script checks strictly that every tensor in adapter_model.safetensors was
loaded into the model unchanged and that no LoRA tensor of the model was left without a value in
the file (peft itself only warns, and an unmatched key would silently leave a zero/random LoRA).
Tested with transformers 5.24.0, peft 0.21.2, torch 2.15.0.
"""
import argparse
import json
import os
import sys

import torch


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="release-layout model dir (config.json + *.safetensors)")
    p.add_argument("--adapter", help="PEFT adapter dir (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--no-adapter", action="store_true", help="base model logits only")
    p.add_argument("--ids", required=True, help="JSON file with token ids, [batch, seq]")
    p.add_argument("--out", required=True, help="output safetensors file (key 'logits', float32)")
    p.add_argument("--threads", type=int, default=int(os.environ.get("PEFT_CHECK_THREADS", "1")))
    p.add_argument("--experts-impl", default=None,
                   help="transformers experts implementation: 'eager' (per-expert loop) or 'grouped_mm' "
                        "(transformers default). Default: leave transformers' choice.")
    p.add_argument("--merge", action="store_true",
                   help="merge_and_unload() the adapter before the forward (should give the same logits)")
    p.add_argument("--no-strict", action="store_true", help="only warn on adapter key mismatches")
    a = p.parse_args()
    if a.no_adapter == bool(a.adapter):
        p.error("give exactly one of --adapter DIR or --no-adapter")
    return a


def load_ids(path):
    with open(path) as f:
        ids = json.load(f)
    t = torch.tensor(ids, dtype=torch.long)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2:
        raise SystemExit(f"--ids must be [batch, seq], got shape {tuple(t.shape)}")
    return t


def check_adapter_loaded(peft_model, adapter_dir, strict):
    """Every tensor in the adapter file must appear (same key, same values) in the model's PEFT
    state dict, and vice versa."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    path = os.path.join(adapter_dir, "adapter_model.safetensors")
    if not os.path.exists(path):
        print(f"[peft_check] note: {path} not found (adapter_model.bin?), skipping strict key check")
        return
    file_sd = load_file(path)
    model_sd = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    # base weights saved alongside embedding-layer LoRA (save_embedding_layers=True) are not LoRA tensors
    file_lora = {k: v for k, v in file_sd.items() if not k.endswith(".base_layer.weight")}
    only_file = sorted(set(file_lora) - set(model_sd))
    only_model = sorted(set(model_sd) - set(file_lora))
    differ = [k for k in set(file_lora) & set(model_sd)
              if file_lora[k].shape != model_sd[k].shape
              or not torch.equal(file_lora[k].to(model_sd[k].dtype).cpu(), model_sd[k].cpu())]
    print(f"[peft_check] adapter tensors in file: {len(file_lora)}, LoRA tensors in model: {len(model_sd)}")
    problems = []
    if only_file:
        problems.append(f"{len(only_file)} adapter tensors were NOT used by the model, e.g. {only_file[:5]}")
    if only_model:
        problems.append(f"{len(only_model)} LoRA tensors of the model have no value in the file, e.g. {only_model[:5]}")
    if differ:
        problems.append(f"{len(differ)} tensors were loaded with different shape/values, e.g. {sorted(differ)[:5]}")
    for msg in problems:
        print("[peft_check] " + ("WARNING: " if not strict else "ERROR: ") + msg, file=sys.stderr)
    if problems and strict:
        raise SystemExit(2)


def main():
    a = parse()
    torch.set_num_threads(max(1, a.threads))
    import transformers
    from transformers import DeepseekV4ForCausalLM
    from safetensors.torch import save_file

    kw = {}
    if a.experts_impl:
        kw["experts_implementation"] = a.experts_impl
    model, info = DeepseekV4ForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, device_map="cpu", output_loading_info=True, **kw)
    bad = {k: sorted(v)[:10] for k, v in info.items() if v and k in ("missing_keys", "mismatched_keys")}
    if bad:
        raise SystemExit(f"[peft_check] base model did not load cleanly: {bad}")
    if info.get("unexpected_keys"):
        print(f"[peft_check] note: unexpected (ignored) checkpoint keys: {sorted(info['unexpected_keys'])[:10]}")
    model.eval()

    versions = f"transformers {transformers.__version__}, torch {torch.__version__}"
    if a.adapter:
        import peft
        from peft import PeftModel
        versions += f", peft {peft.__version__}"
        model = PeftModel.from_pretrained(model, a.adapter, is_trainable=False)
        model.eval()
        check_adapter_loaded(model, a.adapter, strict=not a.no_strict)
        if a.merge:
            model = model.merge_and_unload()
    print(f"[peft_check] {versions}")

    ids = load_ids(a.ids)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    logits = logits.float().contiguous().cpu()
    save_file({"logits": logits}, a.out, metadata={"model": os.path.abspath(a.model),
                                                   "adapter": os.path.abspath(a.adapter) if a.adapter else "",
                                                   "versions": versions})
    print(f"[peft_check] wrote {a.out}: logits {tuple(logits.shape)} float32, "
          f"absmax {logits.abs().max().item():.6g}")


if __name__ == "__main__":
    main()
