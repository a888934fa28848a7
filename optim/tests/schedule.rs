//! The learning-rate schedule and its `[schedule]` recipe form.

use v4_optim::schedule::{DecayShape, ScheduleKind};
use v4_optim::{LrSchedule, ScheduleConfig};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-30)
}

#[test]
fn wsd_warmup_stable_cosine_decay_to_floor() {
    let s = LrSchedule::new(ScheduleConfig {
        peak_lr: 1.0,
        warmup_steps: 10,
        total_steps: 110,
        decay_steps: 50,
        ..Default::default()
    })
    .expect("valid");
    assert!(close(s.lr(0), 0.1));
    assert!(close(s.lr(9), 1.0));
    assert!(close(s.lr(10), 1.0));
    assert!(close(s.lr(59), 1.0));
    assert!(close(s.lr(60), 1.0));
    assert!(close(s.lr(85), 0.1 + 0.9 * 0.5));
    assert!(close(s.lr(110), 0.1));
    assert!(close(s.lr(10_000), 0.1));
}

#[test]
fn linear_decay_cosine_and_constant() {
    let base = ScheduleConfig {
        peak_lr: 2.0,
        warmup_steps: 0,
        total_steps: 100,
        decay_steps: 100,
        min_lr_ratio: 0.0,
        ..Default::default()
    };
    let lin = LrSchedule::new(ScheduleConfig {
        decay_shape: DecayShape::Linear,
        ..base.clone()
    })
    .expect("valid");
    assert!(close(lin.lr(25), 1.5));
    let cos = LrSchedule::new(ScheduleConfig {
        kind: ScheduleKind::Cosine,
        ..base.clone()
    })
    .expect("valid");
    assert!(close(cos.lr(50), 1.0));
    assert!(cos.lr(100).abs() < 1e-12);
    let constant = LrSchedule::new(ScheduleConfig {
        kind: ScheduleKind::Constant,
        ..base
    })
    .expect("valid");
    assert!(close(constant.lr(1_000_000), 2.0));
}

#[test]
fn invalid_schedules_are_rejected() {
    let wsd_without_decay = ScheduleConfig {
        total_steps: 100,
        ..Default::default()
    };
    assert!(LrSchedule::new(wsd_without_decay).is_err());
    let bad_floor = ScheduleConfig {
        kind: ScheduleKind::Constant,
        min_lr_ratio: 2.0,
        ..Default::default()
    };
    assert!(LrSchedule::new(bad_floor).is_err());
}

#[test]
fn schedule_from_toml() {
    let cfg: ScheduleConfig = toml::from_str(
        "kind = \"wsd\"\npeak_lr = 2.7e-4\nwarmup_steps = 2000\ntotal_steps = 100000\n\
         decay_steps = 10000\ndecay_shape = \"linear\"\n",
    )
    .expect("parses");
    assert_eq!(cfg.decay_shape, DecayShape::Linear);
    assert!(close(
        LrSchedule::new(cfg).expect("valid").lr(50_000),
        2.7e-4
    ));
    assert!(toml::from_str::<ScheduleConfig>("peak = 1.0").is_err());
}
