//! Seeded mutations of a sample file: byte-level edits for every format, token-level edits for
//! text formats. Each mutant applies one to four edits; positions fall in the sample's `hot`
//! range (a binary format's header) four times out of five.

use std::ops::Range;

use crate::common::Rng;

/// Bytes that parsers treat specially: zero, all ones, sign bits, digits, quotes, brackets,
/// separators, an exponent, a newline, the npy magic's first byte.
const INTERESTING_BYTES: &[u8] = &[
    0x00, 0xff, 0x7f, 0x80, b'-', b'9', b'"', b'\'', b'<', b'>', b'{', b'}', b'[', b']', b'(',
    b')', b',', b':', b'.', b'e', b' ', b'\n', b'&', 0x93,
];

/// Little-endian integers that length and offset fields choke on.
const INTERESTING_INTS: &[u64] = &[
    0,
    1,
    0x7f,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// What replaces a number in a text format.
const INTERESTING_NUMBERS: &[&str] = &[
    "-1",
    "0",
    "-0",
    "1e308",
    "-1e308",
    "1e400",
    "1e-400",
    "18446744073709551616",
    "9223372036854775808",
    "4294967296",
    "999999999",
    "NaN",
    "inf",
    "\"\"",
    "",
    "1.5",
    "0x10",
    "null",
    "true",
    "[]",
    "{}",
    "[1, 2]",
    "\"x\"",
];

/// What a mutation may do to a sample.
#[derive(Clone)]
pub struct Mutator {
    pub text: bool,
    /// Where most edits land (a binary header); the whole sample for text.
    pub hot: Range<usize>,
}

impl Mutator {
    pub fn new(text: bool, hot: Range<usize>) -> Self {
        Mutator { text, hot }
    }

    /// One mutant of `sample`.
    pub fn mutate(&self, rng: &mut Rng, sample: &[u8]) -> Vec<u8> {
        let mut data = sample.to_vec();
        let edits = 1 + below(rng, 4);
        for _ in 0..edits {
            // Text: half the edits are token edits, which keep the syntax more often than not.
            let kind = if self.text && below(rng, 2) == 0 {
                5 + below(rng, 4)
            } else {
                below(rng, 7)
            };
            match kind {
                0 => {
                    if let Some(i) = self.pos(rng, &data) {
                        data[i] ^= 1 << below(rng, 8);
                    }
                }
                1 => {
                    if let Some(i) = self.pos(rng, &data) {
                        data[i] = INTERESTING_BYTES[below(rng, INTERESTING_BYTES.len())];
                    }
                }
                2 => {
                    let cut = below(rng, data.len() + 1);
                    data.truncate(cut);
                }
                3 => duplicate_chunk(rng, &mut data),
                4 => delete_chunk(rng, &mut data),
                5 | 6 if !self.text => {
                    if let Some(i) = self.pos(rng, &data) {
                        let v = INTERESTING_INTS[below(rng, INTERESTING_INTS.len())];
                        let width = [1usize, 2, 4, 8][below(rng, 4)];
                        for (k, b) in v.to_le_bytes().iter().take(width).enumerate() {
                            if let Some(slot) = data.get_mut(i + k) {
                                *slot = *b;
                            }
                        }
                    }
                }
                5 | 6 => replace_number(rng, &mut data),
                7 => delete_closing(rng, &mut data),
                _ => empty_string(rng, &mut data),
            }
        }
        data
    }

    fn pos(&self, rng: &mut Rng, data: &[u8]) -> Option<usize> {
        if data.is_empty() {
            return None;
        }
        let hot = self.hot.start.min(data.len())..self.hot.end.min(data.len());
        if !hot.is_empty() && below(rng, 5) != 0 {
            Some(hot.start + below(rng, hot.len()))
        } else {
            Some(below(rng, data.len()))
        }
    }
}

/// Uniform in `0..n` (`n` > 0).
pub fn below(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn duplicate_chunk(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let start = below(rng, data.len());
    let len = 1 + below(rng, (data.len() - start).min(64));
    let chunk = data[start..start + len].to_vec();
    let at = below(rng, data.len() + 1);
    data.splice(at..at, chunk);
}

fn delete_chunk(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let start = below(rng, data.len());
    let len = 1 + below(rng, (data.len() - start).min(64));
    data.drain(start..start + len);
}

/// Spans of decimal numbers (`-12.5e3`) in text.
fn number_spans(data: &[u8]) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if data[i].is_ascii_digit() {
            let mut start = i;
            if start > 0 && data[start - 1] == b'-' {
                start -= 1;
            }
            while i < data.len() && (data[i].is_ascii_digit() || b".eE+-".contains(&data[i])) {
                i += 1;
            }
            spans.push(start..i);
        } else {
            i += 1;
        }
    }
    spans
}

fn replace_number(rng: &mut Rng, data: &mut Vec<u8>) {
    let spans = number_spans(data);
    if spans.is_empty() {
        return;
    }
    let span = spans[below(rng, spans.len())].clone();
    let with = INTERESTING_NUMBERS[below(rng, INTERESTING_NUMBERS.len())];
    data.splice(span, with.bytes());
}

/// Delete one closing tag bracket, brace, bracket, parenthesis or quote.
fn delete_closing(rng: &mut Rng, data: &mut Vec<u8>) {
    let at: Vec<usize> = (0..data.len())
        .filter(|&i| b">}])\"'".contains(&data[i]) || data[i..].starts_with(b"</"))
        .collect();
    if !at.is_empty() {
        data.remove(at[below(rng, at.len())]);
    }
}

/// Empty a quoted string or an XML element's text.
fn empty_string(rng: &mut Rng, data: &mut Vec<u8>) {
    let opens: Vec<usize> = (0..data.len())
        .filter(|&i| b"\"'>".contains(&data[i]))
        .collect();
    if opens.is_empty() {
        return;
    }
    let open = opens[below(rng, opens.len())];
    let close = if data[open] == b'>' { b'<' } else { data[open] };
    if let Some(len) = data[open + 1..].iter().position(|&c| c == close) {
        data.drain(open + 1..open + 1 + len);
    }
}
