//! Structure-aware mutations of seed files: bit flips, byte sets, inserts, deletes, splices between seeds,
//! truncation, interesting integers/floats written at known header-field offsets or anywhere, and token-level edits
//! of text formats (numbers swapped for edge values, lines dropped/duplicated/swapped, dictionary tokens inserted).

/// A small, fast, seedable PRNG (xorshift64*), so runs are reproducible from `--seed`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is remapped).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Where and how a target's inputs are best mutated.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Binary header fields `(offset, width in bytes)` worth overwriting with edge values.
    pub fields: &'static [(usize, usize)],
    /// Tokens inserted into or substituted in the input.
    pub dict: &'static [&'static str],
    /// The format is text: also apply line and number-token edits.
    pub text: bool,
    /// Bytes from the start most worth mutating (header length); 0 = whole input.
    pub head: usize,
    /// Bytes at the end most worth mutating (e.g. ONNX `metadata_props` after the graph); 0 = none.
    pub tail: usize,
}

const EDGE_INTS: [i64; 16] = [
    0,
    1,
    -1,
    2,
    3,
    4,
    7,
    8,
    16,
    255,
    256,
    32767,
    -32768,
    65535,
    i32::MAX as i64,
    i32::MIN as i64,
];
const EDGE_FLOATS: [f64; 9] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    1e-300,
    1e300,
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
];
const EDGE_NUMBERS: [&str; 18] = [
    "0",
    "-1",
    "1",
    "2",
    "3",
    "65536",
    "-0",
    "1e309",
    "-1e309",
    "NaN",
    "nan",
    ".inf",
    "1e-320",
    "0.5",
    "4294967296",
    "18446744073709551616",
    "9223372036854775807",
    "99999999999999999999999",
];

fn pick<'a, T>(rng: &mut Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.below(xs.len())]
}

fn position(rng: &mut Rng, len: usize, head: usize, tail: usize) -> usize {
    if tail > 0 && rng.chance(0.6) {
        len.saturating_sub(tail.min(len)) + rng.below(tail.min(len).max(1))
    } else if head > 0 && rng.chance(0.6) {
        rng.below(head.min(len).max(1))
    } else {
        rng.below(len.max(1))
    }
}

fn write_value(data: &mut [u8], at: usize, width: usize, rng: &mut Rng) {
    let big = rng.chance(0.2);
    let bytes: Vec<u8> = if rng.chance(0.3) && (width == 4 || width == 8) {
        let f = *pick(rng, &EDGE_FLOATS);
        match (width, big) {
            (4, false) => (f as f32).to_le_bytes().to_vec(),
            (4, true) => (f as f32).to_be_bytes().to_vec(),
            (_, false) => f.to_le_bytes().to_vec(),
            (_, true) => f.to_be_bytes().to_vec(),
        }
    } else {
        let v = if rng.chance(0.8) {
            *pick(rng, &EDGE_INTS)
        } else {
            rng.next_u64() as i64
        };
        let le = v.to_le_bytes();
        let be = v.to_be_bytes();
        if big {
            be[8 - width.min(8)..].to_vec()
        } else {
            le[..width.min(8)].to_vec()
        }
    };
    for (i, b) in bytes.into_iter().enumerate() {
        if let Some(slot) = data.get_mut(at + i) {
            *slot = b;
        }
    }
}

fn number_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() {
            let start = if i > 0 && text[i - 1] == b'-' {
                i - 1
            } else {
                i
            };
            while i < text.len()
                && (text[i].is_ascii_digit() || matches!(text[i], b'.' | b'e' | b'E'))
            {
                i += 1;
            }
            spans.push((start, i));
        } else {
            i += 1;
        }
    }
    spans
}

fn line_spans(text: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' {
            spans.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < text.len() {
        spans.push((start, text.len()));
    }
    spans
}

/// Apply one mutation to `data`; `other` is another seed for splices.
pub fn mutate_once(data: &mut Vec<u8>, other: &[u8], hints: &Hints, rng: &mut Rng) {
    let len = data.len();
    let choice = rng.below(if hints.text { 13 } else { 9 });
    match choice {
        0 if len > 0 => {
            let at = position(rng, len, hints.head, hints.tail);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = position(rng, len, hints.head, hints.tail);
            data[at] = *pick(
                rng,
                &[
                    0u8, 1, 0x7f, 0x80, 0xff, b'-', b'9', b' ', b'\n', b'"', b':', 0,
                ],
            );
        }
        2 => {
            let at = position(rng, len + 1, hints.head, hints.tail).min(len);
            let n = 1 + rng.below(16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, ins);
        }
        3 if len > 0 => {
            let at = position(rng, len, hints.head, hints.tail);
            let n = (1 + rng.below(64)).min(len - at);
            data.drain(at..at + n);
        }
        4 if !other.is_empty() => {
            let from = rng.below(other.len());
            let n = (1 + rng.below(256)).min(other.len() - from);
            let at = position(rng, len + 1, hints.head, hints.tail).min(len);
            if rng.chance(0.5) {
                data.splice(at..at, other[from..from + n].iter().copied());
            } else {
                let end = (at + n).min(len);
                data.splice(at..end, other[from..from + n].iter().copied());
            }
        }
        5 if len > 0 => {
            let keep = if rng.chance(0.5) {
                position(rng, len, hints.head, hints.tail)
            } else {
                rng.below(len)
            };
            data.truncate(keep);
        }
        6 if !hints.fields.is_empty() => {
            let &(at, width) = pick(rng, hints.fields);
            write_value(data, at, width, rng);
        }
        7 if len > 0 => {
            let width = *pick(rng, &[1usize, 2, 4, 8]);
            let at = position(rng, len, hints.head, hints.tail);
            write_value(data, at, width, rng);
        }
        8 if !hints.dict.is_empty() => {
            let tok = pick(rng, hints.dict).as_bytes();
            let at = position(rng, len + 1, hints.head, hints.tail).min(len);
            data.splice(at..at, tok.iter().copied());
        }
        9 => {
            let spans = number_spans(data);
            if !spans.is_empty() {
                let (a, b) = *pick(rng, &spans);
                data.splice(a..b, pick(rng, &EDGE_NUMBERS).bytes());
            }
        }
        10 | 11 => {
            let lines = line_spans(data);
            if !lines.is_empty() {
                let (a, b) = *pick(rng, &lines);
                match rng.below(3) {
                    0 => {
                        data.drain(a..b);
                    }
                    1 => {
                        let copy = data[a..b].to_vec();
                        data.splice(a..a, copy);
                    }
                    _ => {
                        let (c, d) = *pick(rng, &lines);
                        if (c, d) != (a, b) {
                            let (first, second) = if a < c {
                                ((a, b), (c, d))
                            } else {
                                ((c, d), (a, b))
                            };
                            let x = data[first.0..first.1].to_vec();
                            let y = data[second.0..second.1].to_vec();
                            data.splice(second.0..second.1, x);
                            data.splice(first.0..first.1, y);
                        }
                    }
                }
            }
        }
        _ => {
            if !hints.dict.is_empty() {
                let lines = line_spans(data);
                if !lines.is_empty() {
                    let (a, b) = *pick(rng, &lines);
                    let mut tok = pick(rng, hints.dict).as_bytes().to_vec();
                    tok.push(b'\n');
                    data.splice(a..b, tok);
                }
            }
        }
    }
}

/// A havoc stack: 1 to 6 mutations of a copy of `seed`.
pub fn mutate(seed: &[u8], other: &[u8], hints: &Hints, rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    let most = if rng.chance(0.7) { 2 } else { 6 };
    let n = 1 + rng.below(most);
    for _ in 0..n {
        mutate_once(&mut data, other, hints, rng);
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_change_inputs_and_are_reproducible() {
        let seed = b"DimSize = 4 4 4\nElementType = MET_FLOAT\n".to_vec();
        let hints = Hints {
            text: true,
            dict: &["LIST"],
            ..Hints::default()
        };
        let run = |s| {
            let mut rng = Rng::new(s);
            (0..200)
                .map(|_| mutate(&seed, b"xyz", &hints, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same mutants");
        let changed = a.iter().filter(|m| **m != seed).count();
        assert!(
            changed > 150,
            "only {changed}/200 mutants differ from the seed"
        );
        assert!(number_spans(b"a 12 -3.5e2 x").len() == 2);
        assert_eq!(line_spans(b"a\nb\nc").len(), 3);
    }
}
