//! TensorBoard event files written by hand: TFRecord framing (length, masked CRC-32C of the length, payload, masked
//! CRC-32C of the payload) around `tensorflow.Event` protobufs carrying scalar and image summaries. A matching reader
//! verifies the framing and decodes the events back (used by the tests and `medmae-train` itself).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::crc32c::masked_crc32c;
use crate::error::{Result, TrainError};

/// Appends events to `events.out.tfevents.<time>.<host>` in a run directory.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create a new event file in `dir` and write the `brain.Event:2` version record.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let now = wall_time();
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "medmae".into());
        let path = dir.join(format!(
            "events.out.tfevents.{}.{host}.{}",
            now as u64,
            std::process::id()
        ));
        let file = File::create(&path).map_err(|e| TrainError::io(&path, e))?;
        let mut w = Self {
            path,
            out: BufWriter::new(file),
        };
        let mut ev = event_header(now, 0);
        bytes_field(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        w.flush()?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write scalar summaries `(tag, value)` at `step`.
    pub fn scalars(&mut self, step: i64, values: &[(&str, f64)]) -> Result<()> {
        let mut summary = Vec::new();
        for (tag, v) in values {
            let mut val = Vec::new();
            bytes_field(&mut val, 1, tag.as_bytes());
            val.push(0x15); // field 2, wire type 5: float simple_value
            val.extend_from_slice(&(*v as f32).to_le_bytes());
            bytes_field(&mut summary, 1, &val);
        }
        self.summary(step, &summary)
    }

    /// Write a PNG image summary at `step`.
    pub fn image(
        &mut self,
        step: i64,
        tag: &str,
        png: &[u8],
        height: u32,
        width: u32,
        channels: u32,
    ) -> Result<()> {
        let mut img = Vec::new();
        varint_field(&mut img, 1, height as u64);
        varint_field(&mut img, 2, width as u64);
        varint_field(&mut img, 3, channels as u64);
        bytes_field(&mut img, 4, png);
        let mut val = Vec::new();
        bytes_field(&mut val, 1, tag.as_bytes());
        bytes_field(&mut val, 4, &img);
        let mut summary = Vec::new();
        bytes_field(&mut summary, 1, &val);
        self.summary(step, &summary)
    }

    /// Flush buffered records to disk.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| TrainError::io(&self.path, e))
    }

    fn summary(&mut self, step: i64, summary: &[u8]) -> Result<()> {
        let mut ev = event_header(wall_time(), step);
        bytes_field(&mut ev, 5, summary);
        self.record(&ev)?;
        self.flush()
    }

    fn record(&mut self, data: &[u8]) -> Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(data.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out
            .write_all(&buf)
            .map_err(|e| TrainError::io(&self.path, e))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn event_header(wall: f64, step: i64) -> Vec<u8> {
    let mut ev = vec![0x09]; // field 1, wire type 1: double wall_time
    ev.extend_from_slice(&wall.to_le_bytes());
    varint_field(&mut ev, 2, step as u64);
    ev
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    varint(out, u64::from(field) << 3);
    varint(out, v);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    varint(out, (u64::from(field) << 3) | 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Seconds since the epoch.
    pub wall_time: f64,
    /// Global step.
    pub step: i64,
    /// `file_version` (first record only).
    pub file_version: Option<String>,
    /// Scalar summaries `(tag, value)`.
    pub scalars: Vec<(String, f32)>,
    /// Image summaries `(tag, encoded PNG)`.
    pub images: Vec<(String, Vec<u8>)>,
}

/// Read every record of an event file, checking both CRCs of each, and decode the events.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| TrainError::io(path, e))?;
    let bad = |msg: String| TrainError::format(path, msg);
    let mut events = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        let header = bytes
            .get(pos..pos + 12)
            .ok_or_else(|| bad(format!("truncated record header at byte {pos}")))?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc32c(len_bytes)
            != u32::from_le_bytes(len_crc.try_into().map_err(|_| bad("header".into()))?)
        {
            return Err(bad(format!("length CRC mismatch at byte {pos}")));
        }
        let len = usize::try_from(u64::from_le_bytes(
            len_bytes.try_into().map_err(|_| bad("header".into()))?,
        ))
        .map_err(|_| bad("record too long".into()))?;
        let start = pos + 12;
        let end = start
            .checked_add(len)
            .filter(|&e| e + 4 <= bytes.len())
            .ok_or_else(|| bad(format!("truncated record at byte {pos}")))?;
        let data = &bytes[start..end];
        let crc = u32::from_le_bytes(
            bytes[end..end + 4]
                .try_into()
                .map_err(|_| bad("crc".into()))?,
        );
        if masked_crc32c(data) != crc {
            return Err(bad(format!(
                "data CRC mismatch in the record at byte {pos}"
            )));
        }
        events.push(decode_event(data).map_err(|m| bad(format!("record at byte {pos}: {m}")))?);
        pos = end + 4;
    }
    Ok(events)
}

/// A protobuf field: number and payload.
enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Fixed32([u8; 4]),
    Bytes(&'a [u8]),
}

fn read_varint(data: &[u8], pos: &mut usize) -> std::result::Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(data: &[u8]) -> std::result::Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = read_varint(data, &mut pos)?;
        let take = |pos: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
            let s = data.get(*pos..*pos + n).ok_or("truncated field")?;
            *pos += n;
            Ok(s)
        };
        let f = match key & 7 {
            0 => Field::Varint(read_varint(data, &mut pos)?),
            1 => Field::Fixed64(take(&mut pos, 8)?.try_into().map_err(|_| "fixed64")?),
            2 => {
                let n = usize::try_from(read_varint(data, &mut pos)?).map_err(|_| "length")?;
                Field::Bytes(take(&mut pos, n)?)
            }
            5 => Field::Fixed32(take(&mut pos, 4)?.try_into().map_err(|_| "fixed32")?),
            w => return Err(format!("unsupported wire type {w}")),
        };
        out.push((key >> 3, f));
    }
    Ok(out)
}

fn decode_event(data: &[u8]) -> std::result::Result<Event, String> {
    let mut ev = Event::default();
    for (num, f) in fields(data)? {
        match (num, f) {
            (1, Field::Fixed64(b)) => ev.wall_time = f64::from_le_bytes(b),
            (2, Field::Varint(v)) => ev.step = v as i64,
            (3, Field::Bytes(b)) => ev.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Field::Bytes(summary)) => {
                for (n, value) in fields(summary)? {
                    let (1, Field::Bytes(value)) = (n, value) else {
                        continue;
                    };
                    let mut tag = String::new();
                    let mut scalar = None;
                    let mut image = None;
                    for (vn, vf) in fields(value)? {
                        match (vn, vf) {
                            (1, Field::Bytes(t)) => tag = String::from_utf8_lossy(t).into_owned(),
                            (2, Field::Fixed32(b)) => scalar = Some(f32::from_le_bytes(b)),
                            (4, Field::Bytes(img)) => {
                                image = fields(img)?.into_iter().find_map(|(k, f)| match (k, f) {
                                    (4, Field::Bytes(png)) => Some(png.to_vec()),
                                    _ => None,
                                })
                            }
                            _ => {}
                        }
                    }
                    if let Some(s) = scalar {
                        ev.scalars.push((tag.clone(), s));
                    }
                    if let Some(png) = image {
                        ev.images.push((tag, png));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_roundtrip() {
        let mut b = Vec::new();
        varint_field(&mut b, 2, 300);
        assert_eq!(b, vec![0x10, 0xac, 0x02]);
        let f = fields(&b).unwrap();
        assert!(matches!(f[0], (2, Field::Varint(300))));
    }

    #[test]
    fn write_then_read_back_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(7, &[("loss", 0.5), ("lr", 1e-3)]).unwrap();
        w.image(7, "recon", &[1, 2, 3], 1, 1, 3).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let ev = read_events(&path).unwrap();
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!(ev[1].step, 7);
        assert_eq!(
            ev[1].scalars,
            vec![("loss".to_string(), 0.5), ("lr".to_string(), 1e-3f32)]
        );
        assert_eq!(ev[2].images, vec![("recon".to_string(), vec![1, 2, 3])]);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 6] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_events(&path).unwrap_err().to_string().contains("CRC"));
    }
}
