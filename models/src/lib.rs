//! tch (libtorch) implementations of medmae's networks: the ViT encoder, the masked autoencoder (MAE) and UNETR,
//! 2-D and 3-D through one code path, with their losses, checkpoint I/O and the import of other projects'
//! checkpoints (`import`).
//!
//! Every parameter name and shape equals `spec::expected_weights` (the contract with the exporter), so a model built
//! on a fresh `nn::VarStore` can load any checkpoint written by medmae, SelfMedMAE (timm style) or MONAI (monai
//! style). The exact formulations (conventions, patchify order, sincos tables, masking, norm-pix variance, Fourier
//! loss, UNETR variants, checkpoint names and the import mapping) are written down in this crate's `README.md`; the
//! tests compare each network against PyTorch/MONAI references.
//!
//! Choices for 2-D (they differ from SelfMedMAE's 2-D MAE): medmae uses He et al.'s layout — channel-last patchify,
//! column-first 2-D sincos table — and keeps the bias on `encoder_to_decoder`; the norm-pix target follows each
//! reference, unbiased variance in 2-D (He et al.) and biased in 3-D (SelfMedMAE), configurable per model
//! (`spec::ReconLoss::Mse::norm_pix_variance`).

pub mod blocks;
pub mod checkpoint;
pub mod error;
pub mod import;
pub mod layers;
pub mod losses;
pub mod mae;
pub mod pos_embed;
pub mod unetr;
pub mod vit;

pub use checkpoint::{init_unetr_from_mae, load, save, LoadReport};
pub use error::{ModelError, Result};
pub use losses::{dice_ce_loss, dice_loss, DiceCeOptions};
pub use mae::{patchify, random_masking, unpatchify, Mae, MaeOutput, Masking};
pub use unetr::Unetr;
pub use vit::Vit;

use spec::ModelConfig;
use tch::nn;

/// A network of any kind, built from the `model` section of `model.json`.
#[derive(Debug)]
pub enum Model {
    /// Masked autoencoder.
    Mae(Box<Mae>),
    /// UNETR segmentation network.
    Unetr(Box<Unetr>),
}

impl Model {
    /// Build the network `cfg` describes on the model root `p` (parameter names per `spec::expected_weights`).
    pub fn new(p: &nn::Path, cfg: &ModelConfig) -> Result<Self> {
        Ok(match cfg {
            ModelConfig::Mae(m) => Model::Mae(Box::new(Mae::new(p, m)?)),
            ModelConfig::Unetr(u) => Model::Unetr(Box::new(Unetr::new(p, u)?)),
        })
    }
}
