//! Where the bytes of an image come from: a file on disk, or a buffer in memory (an upload) — the readers are the
//! same for both, so an upload is checked exactly like a file.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{ImagingError, Result};

/// A readable, seekable byte source.
pub(crate) trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// An opened image: its name for messages, the folder its relative data files live in (none for memory input), and
/// its bytes.
pub(crate) struct Input<'a> {
    /// The name used in every message (a path, or a caller-chosen label such as "uploaded volume").
    pub name: PathBuf,
    /// The folder that relative data-file names are resolved in; `None` for bytes held in memory.
    pub dir: Option<PathBuf>,
    reader: Box<dyn ReadSeek + 'a>,
    len: u64,
}

impl<'a> Input<'a> {
    /// Open a file.
    pub(crate) fn file(path: &Path) -> Result<Input<'static>> {
        let file = File::open(path).map_err(|e| ImagingError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| ImagingError::io(path, e))?
            .len();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Input {
            name: path.into(),
            dir: Some(dir),
            reader: Box::new(file),
            len,
        })
    }

    /// Wrap bytes held in memory, named `name` in messages.
    pub(crate) fn memory(name: &Path, bytes: &'a [u8]) -> Self {
        Input {
            name: name.into(),
            dir: None,
            reader: Box::new(Cursor::new(bytes)),
            len: bytes.len() as u64,
        }
    }

    /// Total length in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The reader, positioned at `offset`.
    pub(crate) fn at(&mut self, offset: u64) -> Result<&mut (dyn ReadSeek + 'a)> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| ImagingError::io(&self.name, e))?;
        Ok(&mut *self.reader)
    }
}
