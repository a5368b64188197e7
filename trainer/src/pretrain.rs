//! `pretrain`: masked-autoencoder pretraining (`models::mae::Mae`) with reconstruction pictures.

use models::Mae;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec::{MaeConfig, ModelCard, ModelConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::config::ExperimentConfig;
use crate::data::{InputSpec, TensorBatch};
use crate::dist::Dist;
use crate::engine::{train, EpochReport, RunOptions, RunSummary, Task};
use crate::error::{Result, TrainError};
use crate::infer::tensor_to_array;

/// Rows shown in reconstruction grids.
const PICTURE_ROWS: i64 = 4;

/// The MAE being pretrained.
pub struct MaeTask {
    mae: Mae,
    cfg: MaeConfig,
    preprocessing: Vec<spec::TransformSpec>,
    seed: u64,
    device: Device,
}

/// Uniform masking noise `[B, L]` drawn from our RNG (so masks are reproducible and checkpointed).
pub fn masking_noise(
    rng: &mut ChaCha8Rng,
    batch: usize,
    tokens: usize,
    device: Device,
) -> Result<Tensor> {
    let noise: Vec<f32> = (0..batch * tokens).map(|_| rng.random::<f32>()).collect();
    Ok(Tensor::f_from_slice(&noise)?
        .f_view([batch as i64, tokens as i64])?
        .f_to_device(device)?)
}

/// `[B, C, H, W(, D)]` → up to `rows` 2-D slices of channel 0 (the middle D slice in 3-D), as `(H, W)` arrays.
pub fn middle_slices(t: &Tensor, rows: i64) -> Result<Vec<Array2<f32>>> {
    let s = t.size();
    let b = s[0].min(rows);
    let mut x = t.f_narrow(0, 0, b)?.f_select(1, 0)?;
    if s.len() == 5 {
        x = x.f_select(3, s[4] / 2)?;
    }
    let a = tensor_to_array(&x.f_to_kind(Kind::Float)?)?;
    (0..b as usize)
        .map(|i| {
            a.index_axis(ndarray::Axis(0), i)
                .to_owned()
                .into_dimensionality()
                .map_err(|e| TrainError::Data(format!("slice: {e}")))
        })
        .collect()
}

impl MaeTask {
    /// Build the MAE on `vs` (weights initialised from torch's current seed).
    pub fn new(vs: &VarStore, cfg: &ExperimentConfig) -> Result<Self> {
        let ModelConfig::Mae(m) = &cfg.model else {
            return Err(TrainError::config(
                "model.kind",
                "pretrain needs `kind: mae`",
            ));
        };
        let mae = Mae::new(&vs.root(), m)?;
        Ok(Self {
            mae,
            cfg: m.clone(),
            preprocessing: cfg.data.val_transforms.clone(),
            seed: cfg.seed,
            device: vs.device(),
        })
    }
}

impl Task for MaeTask {
    fn command(&self) -> &'static str {
        "pretrain"
    }

    fn input_spec(&self) -> InputSpec {
        InputSpec::for_encoder(&self.cfg.encoder, None)
    }

    fn loss(&self, batch: &TensorBatch, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let b = batch.images.size()[0] as usize;
        let tokens = self.cfg.encoder.num_patches();
        // Noise for the whole global micro-batch (every rank draws the same), then this rank's rows.
        let mut noise = masking_noise(rng, batch.global_len.max(b), tokens, self.device)?;
        if batch.rows.len() != b {
            return Err(TrainError::Data(format!(
                "batch of {b} samples with {} global rows",
                batch.rows.len()
            )));
        }
        if batch.global_len != b || batch.rows.iter().enumerate().any(|(i, &r)| i != r) {
            let rows: Vec<i64> = batch.rows.iter().map(|&r| r as i64).collect();
            let index = Tensor::f_from_slice(&rows)?.f_to_device(self.device)?;
            noise = noise.f_index_select(0, &index)?;
        }
        Ok(self.mae.forward(&batch.images, Some(&noise), true)?.loss)
    }

    fn end_epoch(
        &mut self,
        epoch: usize,
        sample: Option<&TensorBatch>,
        validate: bool,
        pictures: bool,
        dist: &Dist,
    ) -> Result<EpochReport> {
        let mut report = EpochReport::default();
        if !(validate || pictures) {
            return Ok(report);
        }
        let Some(sample) = sample else {
            // Every rank trains the same number of steps, so all have a sample or none has.
            return Ok(report);
        };
        let _guard = tch::no_grad_guard();
        // A fixed mask per epoch index, independent of the training RNG, so pictures do not perturb training.
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5EED_1C7E_u64 ^ epoch as u64);
        let imgs = sample
            .images
            .f_narrow(0, 0, sample.images.size()[0].min(PICTURE_ROWS))?;
        let noise = masking_noise(
            &mut rng,
            imgs.size()[0] as usize,
            self.cfg.encoder.num_patches(),
            self.device,
        )?;
        let out = self.mae.forward(&imgs, Some(&noise), false)?;
        if validate {
            // Each rank scores its own first batch; the mean over ranks is reported.
            let loss = dist.mean(out.loss.f_double_value(&[])?, "the MAE validation loss")?;
            report.scalars.push(("val/mae_loss".into(), loss));
        }
        if pictures && dist.is_main() {
            let (masked, recon) = self.mae.reconstruct(&out, &imgs)?;
            let rows: Vec<[Array2<f32>; 3]> = middle_slices(&imgs, PICTURE_ROWS)?
                .into_iter()
                .zip(middle_slices(&masked, PICTURE_ROWS)?)
                .zip(middle_slices(&recon, PICTURE_ROWS)?)
                .map(|((a, b), c)| [a, b, c])
                .collect();
            report
                .images
                .push(("reconstruction".into(), imaging::draw::mae_figure(&rows)?));
        }
        Ok(report)
    }

    fn card(&self) -> ModelCard {
        ModelCard::new(
            ModelConfig::Mae(self.cfg.clone()),
            self.preprocessing.clone(),
            Vec::new(),
            None,
        )
    }
}

/// Run MAE pretraining as configured, as one rank of `dist`.
pub fn run(cfg: &ExperimentConfig, opts: &RunOptions, dist: &Dist) -> Result<RunSummary> {
    let device = crate::engine::setup_device(cfg, dist)?;
    let split = crate::data::split_ranked(cfg, dist)?;
    crate::checks::at_start(cfg, &split, dist.is_main())?;
    tracing::info!(
        "pretraining on {} volumes of `{}` ({} held out for fine-tuning validation)",
        split.train.len(),
        split.name,
        split.val.len()
    );
    tch::manual_seed(cfg.seed as i64);
    let vs = VarStore::new(device);
    let task = MaeTask::new(&vs, cfg)?;
    train(cfg, opts, vs, task, split.train, dist)
}
