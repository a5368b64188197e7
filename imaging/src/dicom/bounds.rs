//! Element-length bounds check of a DICOM Part 10 file, run before the bytes reach `dicom-object`.
//!
//! The `dicom-parser` crate reserves an element's (or pixel fragment's) declared length before reading it, so a
//! 1 KiB file declaring a 2.7 GB value allocates 2.7 GB. This walk reads only element headers, in the order the
//! parser would (file meta group in Explicit VR Little Endian up to its group length, then the data set in the
//! transfer syntax's VR encoding and byte order, descending into sequences, items and encapsulated pixel data),
//! and rejects the file when a defined length exceeds the bytes left in its file, sequence or item, when an
//! undefined length appears where only a sequence, item or encapsulated Pixel Data may have one, when a binary
//! numeric value's length is not a multiple of its value size (the parser would read a short value, advance by
//! the declared length and lose the element boundaries), or when sequences nest deeper than [`MAX_DEPTH`]. It allocates nothing. Headers cut short by the end of the file are
//! left to the parser, which reports them as truncated.

use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::VR;
use dicom_dictionary_std::StandardDataDictionary;

use crate::error::{ImagingError, Result};

/// Deepest sequence nesting accepted (real objects nest a handful of levels).
pub(crate) const MAX_DEPTH: usize = 32;

/// The "undefined length" marker.
const UNDEFINED: u32 = 0xFFFF_FFFF;
/// Item, item delimitation and sequence delimitation tags.
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);
/// Pixel Data.
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Transfer syntaxes whose data set is deflate-compressed: `dicom-object` (built without its `deflate` feature)
/// refuses them, so their data set is not walked.
const DEFLATED: [&str; 2] = ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"];

/// The value size of a binary numeric VR (values of other VRs are read byte for byte).
fn unit(vr: VR) -> Option<u32> {
    use VR::*;
    match vr {
        US | SS | OW => Some(2),
        AT | UL | SL | FL | OL | OF => Some(4),
        FD | OD | SV | UV | OV => Some(8),
        _ => None,
    }
}

/// One element header.
#[derive(Debug, Clone, Copy)]
struct Header {
    tag: (u16, u16),
    vr: VR,
    len: u32,
    /// Header size in bytes (8 or 12).
    size: usize,
}

/// The header decoder for one encoding.
struct Walker<'a> {
    name: &'a Path,
    buf: &'a [u8],
    big_endian: bool,
    explicit: bool,
}

/// How a run of elements ends.
#[derive(Clone, Copy, PartialEq)]
enum Until {
    /// At `end` (the file, or a defined-length item).
    End,
    /// At an item delimitation item (undefined-length item).
    ItemEnd,
}

/// Check every declared length of a Part 10 file; `body` starts at the `DICM` marker.
pub(crate) fn check_lengths(name: &Path, body: &[u8]) -> Result<()> {
    let meta = Walker {
        name,
        buf: body,
        big_endian: false,
        explicit: true,
    };
    // dicom-object requires (0002,0000) UL with a 4-byte value first and reads meta elements until that many
    // bytes have been consumed; anything else it rejects itself before allocating.
    let mut pos = 4;
    let Some(h) = meta.header(pos, body.len()) else {
        return Ok(());
    };
    if h.tag != (0x0002, 0x0000) || h.len != 4 {
        return Ok(());
    }
    let Some(group_length) = meta.u32_at(pos + h.size) else {
        return Ok(());
    };
    pos += h.size + 4;
    let mut consumed: u32 = 0;
    let mut syntax = None;
    while consumed < group_length {
        let Some(h) = meta.header(pos, body.len()) else {
            return Ok(());
        };
        if h.len == UNDEFINED {
            return Ok(()); // rejected by dicom-object (undefined length in the file meta group)
        }
        meta.fits(&h, pos, body.len(), "file meta group")?;
        let value = pos + h.size;
        let next = value + h.len as usize;
        if h.tag == (0x0002, 0x0010) {
            let uid = body.get(value..next).unwrap_or_default();
            // Trimmed exactly as dicom-object trims it (any trailing white space or NUL): a UID ending in a tab
            // must select the same encoding here as in the parser, or the walk checks the wrong lengths.
            syntax = Some(
                String::from_utf8_lossy(uid)
                    .trim_end_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
            );
        }
        consumed = consumed.saturating_add(h.size as u32).saturating_add(h.len);
        pos = next;
    }
    let Some(syntax) = syntax else { return Ok(()) };
    if DEFLATED.contains(&syntax.as_str()) {
        return Ok(());
    }
    let data = Walker {
        name,
        buf: body,
        big_endian: syntax == "1.2.840.10008.1.2.2",
        explicit: syntax != "1.2.840.10008.1.2",
    };
    data.elements(pos, body.len(), Until::End, 0).map(|_| ())
}

impl Walker<'_> {
    fn u16_at(&self, pos: usize) -> Option<u16> {
        let b: [u8; 2] = self.buf.get(pos..pos.checked_add(2)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    fn u32_at(&self, pos: usize) -> Option<u32> {
        let b: [u8; 4] = self.buf.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
        Some(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// The header at `pos` if it fits before `end`, decoded as the parser does (unknown explicit VRs read as UN;
    /// implicit VRs from the standard dictionary, Pixel Data and overlay data as OW).
    fn header(&self, pos: usize, end: usize) -> Option<Header> {
        let tag = (self.u16_at(pos)?, self.u16_at(pos + 2)?);
        let fits = |size: usize| (pos + size <= end).then_some(());
        if tag.0 == 0xFFFE {
            fits(8)?;
            return Some(Header {
                tag,
                vr: VR::UN,
                len: self.u32_at(pos + 4)?,
                size: 8,
            });
        }
        if !self.explicit {
            fits(8)?;
            let vr = if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
                VR::OW
            } else {
                StandardDataDictionary
                    .by_tag(dicom_core::Tag(tag.0, tag.1))
                    .map(|e| e.vr().relaxed())
                    .unwrap_or(VR::UN)
            };
            return Some(Header {
                tag,
                vr,
                len: self.u32_at(pos + 4)?,
                size: 8,
            });
        }
        let code = self.buf.get(pos + 4..pos + 6)?;
        let vr = VR::from_binary([code[0], code[1]]).unwrap_or(VR::UN);
        use VR::*;
        match vr {
            AE | AS | AT | CS | DA | DS | DT | FL | FD | IS | LO | LT | PN | SH | SL | SS | ST
            | TM | UI | UL | US => {
                fits(8)?;
                Some(Header {
                    tag,
                    vr,
                    len: u32::from(self.u16_at(pos + 6)?),
                    size: 8,
                })
            }
            _ => {
                fits(12)?;
                Some(Header {
                    tag,
                    vr,
                    len: self.u32_at(pos + 8)?,
                    size: 12,
                })
            }
        }
    }

    /// An error naming the file and the element.
    fn error(&self, h: &Header, pos: usize, what: String) -> ImagingError {
        ImagingError::format(
            self.name,
            format!(
                "DICOM element ({:04X},{:04X}) {} at byte {}: {what}",
                h.tag.0, h.tag.1, h.vr, pos
            ),
        )
    }

    /// Reject a defined length that runs past `end`.
    fn fits(&self, h: &Header, pos: usize, end: usize, within: &str) -> Result<()> {
        let left = end.saturating_sub(pos + h.size);
        if h.len != UNDEFINED && h.len as usize > left {
            return Err(self.error(
                h,
                pos,
                format!("declares {} bytes but only {left} remain in the {within} (corrupt or truncated file)", h.len),
            ));
        }
        Ok(())
    }

    /// Walk data elements from `pos`; returns the position after the run (after the item delimiter for
    /// [`Until::ItemEnd`]).
    fn elements(&self, mut pos: usize, end: usize, until: Until, depth: usize) -> Result<usize> {
        let within = if depth == 0 { "file" } else { "item" };
        loop {
            let Some(h) = self.header(pos, end) else {
                return Ok(end); // cut short: the parser reports the truncation
            };
            if h.tag == ITEM_END {
                pos += h.size;
                if until == Until::ItemEnd {
                    return Ok(pos);
                }
                continue; // the parser skips a stray item delimiter
            }
            if h.tag.0 == 0xFFFE {
                return Err(self.error(
                    &h,
                    pos,
                    format!("item tag outside a sequence (in the {within})"),
                ));
            }
            self.fits(&h, pos, end, within)?;
            if let Some(size) = unit(h.vr).filter(|u| h.len != UNDEFINED && h.len % u != 0) {
                // dicom-parser reads whole values only but advances by the declared length: its next header
                // would come from the middle of other data, where this walk could not follow it.
                return Err(self.error(
                    &h,
                    pos,
                    format!(
                        "length {} is not a multiple of the {size}-byte value size",
                        h.len
                    ),
                ));
            }
            let value = pos + h.size;
            pos = if h.vr == VR::SQ || h.len == UNDEFINED {
                if h.len == UNDEFINED && h.vr != VR::SQ && h.vr != VR::UN && h.tag != PIXEL_DATA {
                    return Err(self.error(
                        &h,
                        pos,
                        "undefined length on a non-sequence element".into(),
                    ));
                }
                if depth >= MAX_DEPTH {
                    return Err(self.error(
                        &h,
                        pos,
                        format!("sequences nest deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let seq_end = if h.len == UNDEFINED {
                    end
                } else {
                    value + h.len as usize
                };
                let fragments = h.vr != VR::SQ && h.tag == PIXEL_DATA;
                let after = self.items(value, seq_end, h.len == UNDEFINED, fragments, depth + 1)?;
                if h.len == UNDEFINED {
                    after
                } else {
                    seq_end
                }
            } else {
                value + h.len as usize
            };
            if pos >= end {
                return Ok(end);
            }
        }
    }

    /// Walk the items of a sequence (or the fragments of encapsulated Pixel Data) from `pos` to `end`
    /// (defined length) or to the sequence delimiter (`undefined`); returns the position after it.
    fn items(
        &self,
        mut pos: usize,
        end: usize,
        undefined: bool,
        fragments: bool,
        depth: usize,
    ) -> Result<usize> {
        loop {
            if !undefined && pos >= end {
                return Ok(end);
            }
            let Some(h) = self.header(pos, end) else {
                return Ok(end);
            };
            if h.tag == SEQ_END {
                return Ok(pos + h.size);
            }
            if h.tag != ITEM {
                let what = if fragments {
                    "a pixel data fragment"
                } else {
                    "a sequence item"
                };
                return Err(self.error(&h, pos, format!("expected {what} (FFFE,E000)")));
            }
            let value = pos + h.size;
            if h.len == UNDEFINED {
                if fragments {
                    return Err(self.error(
                        &h,
                        pos,
                        "pixel data fragment of undefined length".into(),
                    ));
                }
                pos = self.elements(value, end, Until::ItemEnd, depth)?;
            } else {
                self.fits(&h, pos, end, "sequence")?;
                let item_end = value + h.len as usize;
                if !fragments {
                    self.elements(value, item_end, Until::End, depth)?;
                }
                pos = item_end;
            }
        }
    }
}

#[cfg(test)]
#[path = "bounds_tests.rs"]
mod tests;
