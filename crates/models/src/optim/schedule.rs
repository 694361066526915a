//! Learning-rate schedules: constant, cosine annealing with linear warm-up (Loshchilov &
//! Hutter, SGDR, 2017; the warm-up of Goyal et al., 2017), and step decay.

/// A learning-rate schedule over optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrSchedule {
    /// The base learning rate at every step.
    Constant,
    /// Linear warm-up from `base / warmup` to `base` over `warmup` steps, then cosine decay to
    /// `min_lr` at step `total`.
    Cosine {
        /// Warm-up steps.
        warmup: usize,
        /// Step at which the decay reaches `min_lr`.
        total: usize,
        /// Final learning rate.
        min_lr: f32,
    },
    /// Multiply by `gamma` every `every` steps.
    Step {
        /// Steps between reductions.
        every: usize,
        /// Factor per reduction.
        gamma: f32,
    },
}

impl LrSchedule {
    /// The learning rate at `step` (0-based) for base rate `base`.
    pub fn lr(&self, base: f32, step: usize) -> f32 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Cosine {
                warmup,
                total,
                min_lr,
            } => {
                if step < warmup {
                    base * (step + 1) as f32 / warmup as f32
                } else if step >= total {
                    min_lr
                } else {
                    let t = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                    min_lr
                        + (base - min_lr) * (0.5 * (1.0 + (std::f64::consts::PI * t).cos())) as f32
                }
            }
            LrSchedule::Step { every, gamma } => base * gamma.powi((step / every.max(1)) as i32),
        }
    }
}
