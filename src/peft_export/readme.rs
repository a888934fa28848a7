//! `README.md` of the exported adapter: where it came from, how to load it, what was left out.

use super::modules::PeftModule;
use std::fmt::Write;

/// The README text for `modules` exported from `checkpoint`, with `skipped` (stem, reason).
pub fn readme(
    checkpoint: &str,
    base: &str,
    modules: &[PeftModule],
    skipped: &[(String, &str)],
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# LoRA adapter exported by `v4train export-adapter`\n");
    let _ = writeln!(
        s,
        "- source checkpoint: `{checkpoint}` (its `adapter.json` is `v4train_adapter.json`)"
    );
    let _ = writeln!(s, "- base model (release layout): `{base}`");
    let n: usize = modules.iter().map(|m| m.sources.len()).sum();
    let _ = writeln!(
        s,
        "- {} PEFT modules carrying {n} v4train adapters\n",
        modules.len()
    );
    let _ = writeln!(
        s,
        "Load with transformers + peft:\n\n```python\nmodel = DeepseekV4ForCausalLM.from_pretrained(BASE_DIR)\n\
         model = peft.PeftModel.from_pretrained(model, THIS_DIR)\n```\n"
    );
    let _ = writeln!(
        s,
        "Each module's scale equals v4train's (`rank_pattern` / `alpha_pattern`). `wo_a`'s per-group \
         adapters are one block-diagonal adapter of `o_a_proj.weight`; the routed experts' `w1` / `w3` \
         adapters one block-diagonal adapter of `mlp.experts.gate_up_proj` (`target_parameters`). \
         `lora_dropout` is 0 (training-only; PEFT refuses it on `target_parameters`).\n"
    );
    if skipped.is_empty() {
        let _ = writeln!(s, "Every adapter of the checkpoint was exported.");
    } else {
        let _ = writeln!(s, "## Not exported ({})\n", skipped.len());
        for (stem, why) in skipped {
            let _ = writeln!(s, "- `{stem}`: {why}");
        }
    }
    s
}
