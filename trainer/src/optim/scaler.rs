//! Dynamic loss scaling for fp16 autocast with PyTorch `GradScaler`'s defaults (scale 2^16, ×2 after 2000
//! overflow-free steps, ½ on an overflow), whose whole state is checkpointed so a resumed run scales identically.

use crate::checkpoint::TrainState;

/// Initial scale.
pub const INIT_SCALE: f64 = 65536.0;
/// Overflow-free steps after which the scale doubles.
pub const GROWTH_INTERVAL: u32 = 2000;

/// The loss scaler: the current scale and the overflow-free steps since it last changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    /// Factor the loss is multiplied by before backward.
    pub scale: f64,
    /// Overflow-free steps since the scale last changed.
    pub growth_tracker: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INIT_SCALE,
            growth_tracker: 0,
        }
    }
}

impl LossScaler {
    /// Update after a step whose unscaled gradients were `finite` (the step is skipped otherwise).
    pub fn update(&mut self, finite: bool) {
        if finite {
            self.growth_tracker += 1;
            if self.growth_tracker == GROWTH_INTERVAL {
                self.scale *= 2.0;
                self.growth_tracker = 0;
            }
        } else {
            self.scale /= 2.0;
            self.growth_tracker = 0;
        }
    }

    /// The scaler a checkpoint's train state describes (defaults for fields older files lack).
    pub fn from_state(state: &TrainState) -> Self {
        Self {
            scale: state.loss_scale.unwrap_or(INIT_SCALE),
            growth_tracker: state.loss_scale_growth_tracker.unwrap_or(0),
        }
    }

    /// Record the scaler in the train state that the next checkpoint writes.
    pub fn store(&self, state: &mut TrainState) {
        state.loss_scale = Some(self.scale);
        state.loss_scale_growth_tracker = Some(self.growth_tracker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{RngState, TORCH_RNG_POLICY, TRAIN_STATE_VERSION};
    use rand::SeedableRng;

    fn state() -> TrainState {
        TrainState {
            format_version: TRAIN_STATE_VERSION,
            command: "pretrain".into(),
            step: 7,
            epoch: 0,
            batch_in_epoch: 7,
            seed: 1,
            rng: RngState::capture(&rand_chacha::ChaCha8Rng::seed_from_u64(1)),
            torch_rng: TORCH_RNG_POLICY.into(),
            best: None,
            loss_scale: None,
            loss_scale_growth_tracker: None,
            global_batch: Some(2),
        }
    }

    #[test]
    fn scaler_state_round_trips_through_train_state_json() {
        let mut s = LossScaler::default();
        s.update(false);
        for _ in 0..1999 {
            s.update(true);
        }
        assert_eq!((s.scale, s.growth_tracker), (32768.0, 1999));
        let mut st = state();
        s.store(&mut st);
        let text = serde_json::to_string(&st).unwrap();
        let back: TrainState = serde_json::from_str(&text).unwrap();
        let mut resumed = LossScaler::from_state(&back);
        assert_eq!(resumed, s);
        // the resumed scaler grows at the same step as the uninterrupted one
        s.update(true);
        resumed.update(true);
        assert_eq!(resumed, s);
        assert_eq!((s.scale, s.growth_tracker), (65536.0, 0));
    }

    #[test]
    fn older_train_states_without_the_tracker_still_load() {
        let mut v = serde_json::to_value(state()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("loss_scale_growth_tracker");
        obj.insert("loss_scale".into(), serde_json::json!(1024.0));
        let st: TrainState = serde_json::from_value(v).unwrap();
        assert_eq!(
            LossScaler::from_state(&st),
            LossScaler {
                scale: 1024.0,
                growth_tracker: 0
            }
        );
        assert_eq!(LossScaler::from_state(&state()), LossScaler::default());
    }
}
