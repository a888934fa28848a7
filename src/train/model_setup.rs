//! The model a run trains, by `[finetune] mode`: every parameter of a preset, a checkpoint or
//! the run's own resumed checkpoint (`"full"`), or LoRA adapters on a frozen base read from
//! `[model] dir` (`"lora"`: new adapters, or the resumed checkpoint's after checking it was
//! trained on this very base). Non-trainable parameters are marked as not requiring gradients.

use super::objectives::{freeze_params, trainable};
use crate::adapter_files::{self, AdapterConfig, BaseIdentity};
use crate::recipe::{BaseStorage, FinetuneMode, ModelSource, Recipe};
use anyhow::{bail, Context, Result};
use burn::tensor::backend::AutodiffBackend;
use std::path::Path;
use v4_checkpoints::ModelDir;
use v4_model::lora::{is_adapter, LoraBuilder};
use v4_model::{ModelConfig, V4Model, WeightSource};

/// A run's model and what trains in it.
pub struct RunModel<B: AutodiffBackend> {
    /// The model, frozen parameters marked.
    pub model: V4Model<B>,
    /// Trainable parameters (elements).
    pub trainable: u64,
    /// All parameters (elements).
    pub total: u64,
    /// The adapter configuration of a LoRA run.
    pub adapters: Option<AdapterConfig>,
}

/// Opens the checkpoint directory `dir` (a release-layout model or a `step-N/`).
fn open(dir: &Path) -> Result<ModelDir> {
    ModelDir::open(dir).with_context(|| format!("opening {}", dir.display()))
}

/// Builds the model of `recipe` (resuming from the checkpoint `resume_from`, when given).
pub fn build<B: AutodiffBackend>(
    recipe: &Recipe,
    cfg: &ModelConfig,
    resume_from: Option<&Path>,
    device: &B::Device,
) -> Result<RunModel<B>> {
    let (model, adapters) = match recipe.finetune.mode {
        FinetuneMode::Full => (full::<B>(recipe, cfg, resume_from, device)?, None),
        FinetuneMode::Lora => {
            let (m, a) = lora::<B>(recipe, cfg, resume_from, device)?;
            (m, Some(a))
        }
    };
    let freeze = recipe.train.freeze;
    let lora = adapters.is_some();
    let learns = |name: &str| {
        if lora {
            is_adapter(name)
        } else {
            trainable(name, freeze)
        }
    };
    let (model, kept) = freeze_params(model, &learns);
    if kept == 0 {
        bail!("[train] freeze = {freeze:?} leaves no trainable parameter in this model");
    }
    let (mut trainable_n, mut total) = (0u64, 0u64);
    model.visit_named(&mut |name, p| {
        if let Some(n) = p.numel() {
            total += n as u64;
            if learns(&name) {
                trainable_n += n as u64;
            }
        }
    });
    Ok(RunModel {
        model,
        trainable: trainable_n,
        total,
        adapters,
    })
}

/// Full training: the resumed checkpoint, the `[model] dir` weights, or fresh ones.
fn full<B: AutodiffBackend>(
    recipe: &Recipe,
    cfg: &ModelConfig,
    resume_from: Option<&Path>,
    device: &B::Device,
) -> Result<V4Model<B>> {
    let load = |dir: &Path| -> Result<V4Model<B>> {
        let src = open(dir)?;
        V4Model::<B>::load(cfg, &src as &dyn WeightSource, device)
            .with_context(|| format!("loading {}", dir.display()))
    };
    Ok(match (resume_from, &recipe.model.source) {
        (Some(path), _) => load(path)?,
        (None, ModelSource::Dir(dir)) => {
            let m = load(dir)?;
            eprintln!("fine-tuning the weights of {}", dir.display());
            m
        }
        (None, ModelSource::Preset(_)) => V4Model::<B>::init(cfg, recipe.train.seed, device)?,
    })
}

/// LoRA: the base of `[model] dir` with new adapters, or with those of the resumed checkpoint.
fn lora<B: AutodiffBackend>(
    recipe: &Recipe,
    cfg: &ModelConfig,
    resume_from: Option<&Path>,
    device: &B::Device,
) -> Result<(V4Model<B>, AdapterConfig)> {
    let (ModelSource::Dir(dir), Some(lr)) = (&recipe.model.source, &recipe.lora) else {
        bail!("[finetune] mode = \"lora\" needs [model] dir and a [lora] section");
    };
    eprintln!(
        "identifying the base {} (SHA-256 of its files)",
        dir.display()
    );
    let base = BaseIdentity {
        path: dir.display().to_string(),
        content_hash: adapter_files::base_hash(dir)?,
    };
    let spec = lr.spec(recipe.train.seed);
    let saved = match resume_from {
        Some(ckpt) => {
            let was = adapter_files::read_config(ckpt)?;
            if was.base.content_hash != base.content_hash {
                bail!(
                    "{} holds adapters trained on the base {} (content hash {}), but [model] dir \
                     = {} has content hash {}: resuming on another base would silently change \
                     the model. Point [model] dir at the original base, or start a new run",
                    ckpt.display(),
                    was.base.path,
                    was.base.content_hash,
                    base.path,
                    base.content_hash
                );
            }
            if was.lora != spec {
                bail!(
                    "{}: the checkpoint's adapters were made with a different [lora] section \
                     ({:?}); resume with the recipe that made them",
                    ckpt.display(),
                    was.lora
                );
            }
            Some(adapter_files::read_tensors(ckpt)?)
        }
        None => None,
    };
    let builder = LoraBuilder {
        spec: &spec,
        saved: saved.as_ref().map(|s| s as &dyn WeightSource),
    };
    let src = open(dir)?;
    let stored = recipe.finetune.base == BaseStorage::Stored;
    let model = V4Model::<B>::load_adapted(
        cfg,
        &src as &dyn WeightSource,
        Some(&builder),
        stored,
        device,
    )
    .with_context(|| match resume_from {
        Some(c) => format!(
            "loading {} with the adapters of {}",
            dir.display(),
            c.display()
        ),
        None => format!("loading {}", dir.display()),
    })?;
    if resume_from.is_none() {
        eprintln!("LoRA on the frozen weights of {}", dir.display());
    }
    Ok((model, AdapterConfig { lora: spec, base }))
}
