//! MONAI `ConvertToMultiChannelBasedOnBratsClasses`: a one-channel BraTS label map becomes three binary channels
//! TC = (1 | ET), WT = (1 | 2 | ET), ET = (label == et_label), et_label 4 (BraTS 2018–2022) or 3 (2023).

use crate::{ImagingError, Result, Sample, Volume};

/// BraTS label → TC/WT/ET channels.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertToMultiChannelBasedOnBratsClasses {
    et_label: u32,
}

impl ConvertToMultiChannelBasedOnBratsClasses {
    /// Build; `et_label` cannot be 1 or 2 (reserved for NCR and ED).
    pub fn new(et_label: u32) -> Result<Self> {
        if et_label == 1 || et_label == 2 {
            return Err(ImagingError::config(
                "et_label",
                format!("cannot be 1 or 2 (reserved), got {et_label}"),
            ));
        }
        Ok(Self { et_label })
    }

    /// Convert a one-channel label map.
    pub fn convert(&self, label: &Volume) -> Result<Volume> {
        if label.channels() != 1 {
            return Err(ImagingError::Shape(format!(
                "ConvertToMultiChannelBasedOnBratsClasses expects a 1-channel label, got {} channels",
                label.channels()
            )));
        }
        let et = self.et_label as f32;
        let [x, y, z] = label.spatial_shape();
        let l = label.data.index_axis(ndarray::Axis(0), 0);
        let mut out = ndarray::Array4::<f32>::zeros((3, x, y, z));
        for (idx, &v) in l.indexed_iter() {
            let (is_et, is_core) = (v == et, v == 1.0);
            let b = |c: bool| if c { 1.0 } else { 0.0 };
            out[[0, idx.0, idx.1, idx.2]] = b(is_core || is_et);
            out[[1, idx.0, idx.1, idx.2]] = b(is_core || is_et || v == 2.0);
            out[[2, idx.0, idx.1, idx.2]] = b(is_et);
        }
        Ok(Volume::new(out, label.affine))
    }

    /// Convert the label of a sample (error if it has none).
    pub fn apply(&self, mut sample: Sample) -> Result<Sample> {
        let label = sample.label.as_ref().ok_or_else(|| {
            ImagingError::config(
                "label",
                "ConvertToMultiChannelBasedOnBratsClasses needs a label map",
            )
        })?;
        sample.label = Some(self.convert(label)?);
        Ok(sample)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_per_class() {
        let l = ndarray::Array4::from_shape_vec((1, 1, 1, 6), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
            .unwrap();
        let v = Volume::new(l, Volume::diag_affine([1.0; 3]));
        let o = ConvertToMultiChannelBasedOnBratsClasses::new(4)
            .unwrap()
            .convert(&v)
            .unwrap();
        let ch = |c: usize| {
            o.data
                .index_axis(ndarray::Axis(0), c)
                .iter()
                .copied()
                .collect::<Vec<f32>>()
        };
        assert_eq!(ch(0), vec![0.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
        assert_eq!(ch(1), vec![0.0, 1.0, 1.0, 0.0, 1.0, 0.0]);
        assert_eq!(ch(2), vec![0.0, 0.0, 0.0, 0.0, 1.0, 0.0]);
        let o3 = ConvertToMultiChannelBasedOnBratsClasses::new(3)
            .unwrap()
            .convert(&v)
            .unwrap();
        assert_eq!(o3.data[[2, 0, 0, 3]], 1.0);
        assert!(ConvertToMultiChannelBasedOnBratsClasses::new(2).is_err());
    }
}
