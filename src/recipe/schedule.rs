//! `[schedule]` defaults that depend on the run: the table is `v4_optim::ScheduleConfig`
//! (wsd, peak 2.7e-4, floor 0.1× by default); keys left out are filled from `train.steps`.

use toml::{Table, Value};

/// Fills, when absent: `total_steps = train.steps`, `warmup_steps = min(2000, total / 10)`
/// (V4 warms up for 2000 steps) and `decay_steps = max(1, total / 10)` (wsd decays near the
/// end; at least one step so very short runs stay valid).
pub(crate) fn fill_defaults(schedule: &mut Table, train_steps: u64) {
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    let total = match schedule.get("total_steps") {
        Some(Value::Integer(t)) => u64::try_from(*t).unwrap_or(0),
        Some(_) => return,
        None => {
            schedule.insert("total_steps".into(), int(train_steps));
            train_steps
        }
    };
    schedule
        .entry("warmup_steps")
        .or_insert_with(|| int((total / 10).min(2000)));
    schedule
        .entry("decay_steps")
        .or_insert_with(|| int((total / 10).max(1).min(total)));
}
