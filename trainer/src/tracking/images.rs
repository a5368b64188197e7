//! Pictures of a run: the figures are drawn by [`imaging::draw`] (shared with `medmae compare`, radiological
//! orientation, titled panels of at least 256 px, legends); this module encodes and writes them.

use std::path::Path;

use image::RgbImage;

use crate::error::Result;

/// PNG bytes of an image.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    Ok(imaging::draw::encode_png(img)?)
}

/// Write PNG bytes to `path` atomically (parent directories are created).
pub fn save_png(png: &[u8], path: &Path) -> Result<()> {
    Ok(imaging::draw::save_png(png, path)?)
}
