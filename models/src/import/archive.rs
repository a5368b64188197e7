//! Reading PyTorch `torch.save` files (the zip format of PyTorch ≥ 1.6): the pickled object from `<name>/data.pkl`
//! and tensor data from `<name>/data/<key>` (little-endian unless `<name>/byteorder` says `big`), with every
//! tensor's extent checked against its storage before a view is made.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use super::pickle::{self, Dtype, TensorRef, Value};
use crate::error::{ModelError, Result};

/// Largest `data.pkl` read (the pickle holds names and shapes only; tensor data lives in other records).
const MAX_PICKLE: u64 = 1 << 30;

/// An open `torch.save` archive.
pub struct TorchArchive {
    path: PathBuf,
    zip: zip::ZipArchive<File>,
    prefix: String,
    big_endian: bool,
    storages: HashMap<String, Tensor>,
}

fn file_err(path: &Path, msg: impl std::fmt::Display) -> ModelError {
    ModelError::CheckpointFile {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// True when the zip archive is a TorchScript / libtorch archive (it has a `<name>/constants.pkl` record), as
/// `torch.jit.save` and libtorch's own `save` (tch's `VarStore::save` to a non-safetensors path) write them.
pub fn is_torchscript(path: &Path) -> Result<bool> {
    let file = File::open(path).map_err(|e| file_err(path, e))?;
    let zip = zip::ZipArchive::new(file)
        .map_err(|e| file_err(path, format!("not a readable zip archive: {e}")))?;
    let found = zip
        .file_names()
        .any(|n| n.ends_with("constants.pkl") && n.matches('/').count() == 1);
    Ok(found)
}

/// True when the file starts like a zip archive (`PK\x03\x04`).
pub fn is_zip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = File::open(path).map_err(|e| file_err(path, e))?;
    let n = f.read(&mut magic).map_err(|e| file_err(path, e))?;
    Ok(n == 4 && magic == *b"PK\x03\x04")
}

impl TorchArchive {
    /// Open `path` and interpret its pickle; returns the archive (for tensor data) and the stored object.
    pub fn open(path: &Path) -> Result<(Self, Value)> {
        let file = File::open(path).map_err(|e| file_err(path, e))?;
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| file_err(path, format!("not a readable zip archive: {e}")))?;
        let pkl = zip
            .file_names()
            .find(|n| n.ends_with("data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| {
                file_err(
                    path,
                    "no <name>/data.pkl record: not a torch.save file (a TorchScript or other zip archive?)",
                )
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        if zip
            .file_names()
            .any(|n| n == format!("{prefix}constants.pkl"))
        {
            return Err(file_err(
                path,
                "a TorchScript archive (torch.jit.save), not a torch.save checkpoint: save the model's state_dict() with torch.save",
            ));
        }
        let data = read_record(&mut zip, path, &pkl, MAX_PICKLE, MAX_PICKLE)?;
        let value = pickle::parse(&data).map_err(|e| file_err(path, format!("{pkl}: {e}")))?;
        let byteorder = format!("{prefix}byteorder");
        let big_endian = if zip.file_names().any(|n| n == byteorder) {
            let b = read_record(&mut zip, path, &byteorder, 16, 16)?;
            match b.as_slice() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(file_err(
                        path,
                        format!(
                            "{byteorder}: expected `little` or `big`, found {:?}",
                            String::from_utf8_lossy(other)
                        ),
                    ))
                }
            }
        } else {
            false
        };
        Ok((
            Self {
                path: path.to_path_buf(),
                zip,
                prefix,
                big_endian,
                storages: HashMap::new(),
            },
            value,
        ))
    }

    /// The tensor a reference describes, as a contiguous tensor of its own dtype (bool as bool).
    pub fn tensor(&mut self, t: &TensorRef, name: &str) -> Result<Tensor> {
        let key_err = |msg: String| ModelError::CheckpointKey {
            path: self.path.clone(),
            key: name.to_string(),
            msg,
        };
        let numel = t.storage.numel;
        if t.offset < 0 || t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) {
            return Err(key_err(format!(
                "negative offset, size or stride (offset {}, size {:?}, stride {:?})",
                t.offset, t.size, t.stride
            )));
        }
        // The last element the view touches must lie inside the storage.
        if !t.size.contains(&0) {
            let last = t
                .size
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset as u128, |acc, (&n, &s)| {
                    acc.checked_add((n as u128 - 1).checked_mul(s as u128)?)
                });
            if last.is_none_or(|l| l >= numel as u128) {
                return Err(key_err(format!(
                    "view (offset {}, size {:?}, stride {:?}) reaches past its storage of {numel} elements",
                    t.offset, t.size, t.stride
                )));
            }
        }
        let key = t.storage.key.clone();
        if !self.storages.contains_key(&key) {
            let storage = self.storage(&key, t.storage.dtype, numel, name)?;
            self.storages.insert(key.clone(), storage);
        }
        let storage = &self.storages[&key];
        Ok(storage
            .f_as_strided(&t.size, &t.stride, Some(t.offset))?
            .f_contiguous()?)
    }

    fn storage(&mut self, key: &str, dtype: Dtype, numel: u64, name: &str) -> Result<Tensor> {
        let record = format!("{}data/{key}", self.prefix);
        let bytes = (numel as u128) * dtype.size() as u128;
        let want = u64::try_from(bytes).map_err(|_| {
            file_err(
                &self.path,
                format!("{record}: storage of {numel} elements is too large"),
            )
        })?;
        let have = match self.zip.by_name(&record) {
            Ok(f) => f.size(),
            Err(e) => {
                return Err(ModelError::CheckpointKey {
                    path: self.path.clone(),
                    key: name.to_string(),
                    msg: format!("its data record {record} cannot be read: {e}"),
                })
            }
        };
        if have < want {
            return Err(file_err(
                &self.path,
                format!("{record}: {have} bytes, but the storage needs {want} ({numel} elements of {dtype:?})"),
            ));
        }
        let mut data = read_record(&mut self.zip, &self.path, &record, want, have)?;
        if (data.len() as u64) < want {
            return Err(file_err(
                &self.path,
                format!("{record}: truncated at {} of {want} bytes", data.len()),
            ));
        }
        if self.big_endian && dtype.size() > 1 {
            for chunk in data.chunks_exact_mut(dtype.size()) {
                chunk.reverse();
            }
        }
        let n = numel as i64;
        let t = match dtype {
            // Any non-zero byte is true; torch's bool storage holds 0/1, but never trust a file for that.
            Dtype::Bool => Tensor::f_from_data_size(&data, &[n], Kind::Uint8)?.f_ne(0)?,
            _ => Tensor::f_from_data_size(&data, &[n], kind_of(dtype))?,
        };
        Ok(t)
    }
}

/// The tch kind of a storage dtype.
pub fn kind_of(d: Dtype) -> Kind {
    match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::Bool => Kind::Bool,
    }
}

/// The first `want` bytes of record `name` (all of it when shorter than `want`), refusing a record that declares more
/// than `max` bytes. Memory grows with the bytes actually read, never with a declared size.
fn read_record(
    zip: &mut zip::ZipArchive<File>,
    path: &Path,
    name: &str,
    want: u64,
    max: u64,
) -> Result<Vec<u8>> {
    let f = zip
        .by_name(name)
        .map_err(|e| file_err(path, format!("{name}: {e}")))?;
    if f.size() > max {
        return Err(file_err(
            path,
            format!("{name}: {} bytes, more than the {max} expected", f.size()),
        ));
    }
    let mut out = Vec::new();
    f.take(want)
        .read_to_end(&mut out)
        .map_err(|e| file_err(path, format!("{name}: {e}")))?;
    Ok(out)
}
