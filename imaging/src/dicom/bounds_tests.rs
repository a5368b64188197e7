//! Tests of the element-length bounds check on hand-built files (and the fuzzer's reproducer).

use std::path::Path;

use super::{check_lengths, MAX_DEPTH};
use crate::dicom::meta;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const UNDEF: u32 = 0xFFFF_FFFF;

/// An element encoder for one transfer syntax.
#[derive(Clone, Copy)]
struct Enc {
    explicit: bool,
    big: bool,
}

impl Enc {
    fn u16(self, v: u16) -> [u8; 2] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    fn u32(self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }
    /// An element header with a declared length (the value is appended by the caller).
    fn header(self, g: u16, e: u16, vr: &str, len: u32) -> Vec<u8> {
        let mut out = [self.u16(g), self.u16(e)].concat();
        if g == 0xFFFE || !self.explicit {
            out.extend(self.u32(len));
        } else if matches!(vr, "OB" | "OW" | "SQ" | "UN" | "UT") {
            out.extend(vr.as_bytes());
            out.extend([0, 0]);
            out.extend(self.u32(len));
        } else {
            out.extend(vr.as_bytes());
            out.extend(self.u16(len as u16));
        }
        out
    }
    /// A complete element.
    fn el(self, g: u16, e: u16, vr: &str, value: &[u8]) -> Vec<u8> {
        [self.header(g, e, vr, value.len() as u32), value.to_vec()].concat()
    }
    /// A sequence of defined-length items.
    fn seq(self, g: u16, e: u16, items: &[Vec<u8>], undefined: bool) -> Vec<u8> {
        let mut body = Vec::new();
        for it in items {
            body.extend(self.header(0xFFFE, 0xE000, "", it.len() as u32));
            body.extend(it);
        }
        if undefined {
            body.extend(self.header(0xFFFE, 0xE0DD, "", 0));
            [self.header(g, e, "SQ", UNDEF), body].concat()
        } else {
            self.el(g, e, "SQ", &body)
        }
    }
}

/// `DICM` + file meta group (Explicit VR LE) naming `syntax`, then `data`.
fn file(syntax: &str, data: &[u8]) -> Vec<u8> {
    let le = Enc {
        explicit: true,
        big: false,
    };
    let mut uid = syntax.as_bytes().to_vec();
    if uid.len() % 2 == 1 {
        uid.push(0);
    }
    let group = [
        le.el(0x0002, 0x0001, "OB", &[0, 1]),
        le.el(0x0002, 0x0002, "UI", b"1.2.840.10008.5.1.4.1.1.4\0"),
        le.el(0x0002, 0x0003, "UI", b"1.2.3.4"),
        le.el(0x0002, 0x0010, "UI", &uid),
    ]
    .concat();
    [
        b"DICM".to_vec(),
        le.el(0x0002, 0x0000, "UL", &(group.len() as u32).to_le_bytes()),
        group,
        data.to_vec(),
    ]
    .concat()
}

fn check(bytes: &[u8]) -> Result<(), String> {
    check_lengths(Path::new("scan.dcm"), bytes).map_err(|e| e.to_string())
}

const ENCODINGS: [(&str, Enc); 3] = [
    (
        EXPLICIT_LE,
        Enc {
            explicit: true,
            big: false,
        },
    ),
    (
        IMPLICIT_LE,
        Enc {
            explicit: false,
            big: false,
        },
    ),
    (
        EXPLICIT_BE,
        Enc {
            explicit: true,
            big: true,
        },
    ),
];

#[test]
fn well_formed_files_pass_in_every_encoding() {
    for (syntax, enc) in ENCODINGS {
        // ReferencedImageSequence (0008,1140) is SQ in the dictionary, so implicit files descend into it too.
        let item = enc.el(0x0008, 0x1150, "UI", b"1.2.3\0");
        let data = [
            enc.el(0x0008, 0x0060, "CS", b"MR"),
            enc.seq(0x0008, 0x1140, &[item.clone(), item.clone()], false),
            enc.seq(0x0008, 0x1140, &[item], true),
            enc.el(0x0028, 0x0010, "US", &enc.u16(2)),
            enc.el(0x7FE0, 0x0010, "OW", &[0; 8]),
        ]
        .concat();
        check(&file(syntax, &data)).unwrap_or_else(|e| panic!("{syntax}: {e}"));
    }
}

#[test]
fn a_length_past_the_end_of_the_file_names_the_element() {
    for (syntax, enc) in ENCODINGS {
        let data = [
            enc.el(0x0008, 0x0060, "CS", b"MR"),
            enc.header(0x0009, 0x1001, "UN", 0xA386_8C79),
            vec![0; 16],
        ]
        .concat();
        let e = check(&file(syntax, &data)).unwrap_err();
        assert!(
            e.contains("(0009,1001)") && e.contains("declares 2743503993 bytes"),
            "{syntax}: {e}"
        );
        assert!(
            e.contains("scan.dcm") && e.contains("only 16 remain"),
            "{e}"
        );
    }
}

#[test]
fn an_element_overrunning_its_item_is_rejected_even_inside_the_file() {
    for (syntax, enc) in ENCODINGS {
        // The item declares 8 bytes, its one element 1000 (the file has 2000 more): the parser would read it.
        let mut item = enc.header(0x0008, 0x1155, "UN", 1000);
        item.extend([0; 4]);
        let seq = enc.seq(0x0008, 0x1140, &[item], false);
        let data = [seq, vec![0; 2000]].concat();
        let e = check(&file(syntax, &data)).unwrap_err();
        assert!(
            e.contains("(0008,1155)") && e.contains("remain in the item"),
            "{syntax}: {e}"
        );
    }
}

#[test]
fn undefined_lengths_only_on_sequences_and_pixel_data() {
    let enc = Enc {
        explicit: true,
        big: false,
    };
    let bad = [enc.header(0x0008, 0x103E, "LO", 0xFFFF), vec![0; 4]].concat();
    // A 2-byte length cannot be undefined; UT has a 4-byte length.
    let bad_ut = [enc.header(0x0008, 0x103E, "UT", UNDEF), vec![0; 4]].concat();
    let e = check(&file(EXPLICIT_LE, &bad_ut)).unwrap_err();
    assert!(
        e.contains("(0008,103E)") && e.contains("undefined length"),
        "{e}"
    );
    assert!(check(&file(EXPLICIT_LE, &bad))
        .unwrap_err()
        .contains("declares 65535"));
}

#[test]
fn encapsulated_pixel_data_fragments_are_bounded() {
    let enc = Enc {
        explicit: true,
        big: false,
    };
    let pixels = |frag_len: u32, frag: &[u8]| {
        [
            enc.header(0x7FE0, 0x0010, "OB", UNDEF),
            enc.header(0xFFFE, 0xE000, "", 0), // empty offset table
            enc.header(0xFFFE, 0xE000, "", frag_len),
            frag.to_vec(),
            enc.header(0xFFFE, 0xE0DD, "", 0),
        ]
        .concat()
    };
    let syntax = "1.2.840.10008.1.2.4.50";
    check(&file(syntax, &pixels(4, &[1, 2, 3, 4]))).unwrap();
    let e = check(&file(syntax, &pixels(0x8000_0000, &[1, 2, 3, 4]))).unwrap_err();
    assert!(
        e.contains("(FFFE,E000)") && e.contains("declares 2147483648"),
        "{e}"
    );
    let stray = [
        enc.header(0x7FE0, 0x0010, "OB", UNDEF),
        enc.el(0x0008, 0x0060, "CS", b"MR"),
    ]
    .concat();
    let e = check(&file(syntax, &stray)).unwrap_err();
    assert!(e.contains("expected a pixel data fragment"), "{e}");
}

#[test]
fn nesting_is_capped() {
    let enc = Enc {
        explicit: true,
        big: false,
    };
    let mut inner = enc.el(0x0008, 0x0060, "CS", b"MR");
    for _ in 0..=MAX_DEPTH {
        inner = enc.seq(0x0008, 0x1140, &[inner], true);
    }
    let e = check(&file(EXPLICIT_LE, &inner)).unwrap_err();
    assert!(e.contains("nest deeper than 32"), "{e}");
}

#[test]
fn meta_group_lengths_are_bounded() {
    let le = Enc {
        explicit: true,
        big: false,
    };
    let mut f = file(EXPLICIT_LE, &[]);
    // Replace the transfer syntax element by one declaring more than the file holds (keep the group length).
    let tail = [le.header(0x0002, 0x0012, "UI", 0x7FFF), vec![0; 4]].concat();
    f.extend(tail);
    let group_len_at = 4 + 8;
    let g = u32::from_le_bytes(f[group_len_at..group_len_at + 4].try_into().unwrap()) + 12;
    f[group_len_at..group_len_at + 4].copy_from_slice(&g.to_le_bytes());
    let e = check(&f).unwrap_err();
    assert!(
        e.contains("(0002,0012)") && e.contains("file meta group"),
        "{e}"
    );
}

#[test]
fn truncated_headers_are_left_to_the_parser() {
    let enc = Enc {
        explicit: true,
        big: false,
    };
    let data = [enc.el(0x0008, 0x0060, "CS", b"MR"), vec![0x08, 0x00, 0x70]].concat();
    check(&file(EXPLICIT_LE, &data)).unwrap();
}

#[test]
fn the_fuzzer_reproducer_is_rejected_by_parse_naming_the_element() {
    // Found by the `dicom` fuzz target: a 1 KiB Implicit VR file whose (0008,DC90) declares ~2.7 GB made
    // dicom-parser reserve that length before reading.
    let bytes = include_bytes!("testdata/huge_element.bin");
    for header_only in [true, false] {
        let e = meta::parse(Path::new("upload/slice.dcm"), bytes, header_only)
            .unwrap_err()
            .to_string();
        assert!(e.contains("upload/slice.dcm"), "{e}");
        assert!(
            e.contains("(0008,DC90)") && e.contains("declares 2743503993 bytes"),
            "{e}"
        );
    }
}

#[test]
fn binary_values_must_hold_whole_numbers() {
    for (syntax, enc) in ENCODINGS {
        // Found by the `dicom` fuzz target: a 14-byte (0000,0000) UL made dicom-parser read 12 bytes, advance by
        // 14 and decode later headers from text (a 775 MB length from a UID's digits).
        let data = [
            enc.el(0x0028, 0x0010, "US", &[0, 2, 0]),
            enc.el(0x0008, 0x0060, "CS", b"MR"),
        ]
        .concat();
        let e = check(&file(syntax, &data)).unwrap_err();
        assert!(
            e.contains("(0028,0010) US") && e.contains("not a multiple of the 2-byte"),
            "{syntax}: {e}"
        );
        let ok = enc.el(0x0028, 0x0030, "DS", b".8\\.8 ");
        check(&file(syntax, &ok)).unwrap_or_else(|e| panic!("{syntax}: {e}"));
    }
}

#[test]
fn a_transfer_syntax_uid_padded_with_any_white_space_selects_the_parsers_encoding() {
    // dicom-object trims trailing white space and NULs of the UID: "1.2.840.10008.1.2\t" is Implicit VR, so the
    // walk must read Implicit VR too (reading it as Explicit VR skipped the huge length below).
    let enc = Enc {
        explicit: false,
        big: false,
    };
    let data = [
        enc.el(0x0008, 0x0060, "CS", b"MR"),
        enc.header(0x0009, 0x1001, "UN", 0x3000_0000),
        vec![0; 16],
    ]
    .concat();
    for pad in ["\t", "\n", "\r", " \t"] {
        let e = check(&file(&format!("{IMPLICIT_LE}{pad}"), &data)).unwrap_err();
        assert!(
            e.contains("(0009,1001)") && e.contains("declares 805306368 bytes"),
            "{pad:?}: {e}"
        );
    }
}

#[test]
fn the_tab_padded_transfer_syntax_reproducer_is_rejected_before_parsing() {
    // Found by the `dicom` libFuzzer target: 415 bytes whose transfer syntax UID ends in a tab made dicom-parser
    // allocate 821 MiB for an element the walk had read with the wrong VR encoding.
    let bytes = include_bytes!("testdata/ts_uid_tab.bin");
    for header_only in [true, false] {
        let e = meta::parse(Path::new("upload/slice.dcm"), bytes, header_only)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("upload/slice.dcm") && e.contains("declares"),
            "{e}"
        );
    }
}
