//! NumPy `.npy` files (format versions 1.0-3.0). Writes f32; reads f32, f64, i64, i32, u8 and bool
//! (converted to f32), little- or big-endian, C or Fortran order.

use std::path::Path;

use super::Tensor;
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Write a tensor as a little-endian f32 `.npy` (version 1.0), atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    let shape = t.dims();
    let shape_txt = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that magic + 2 version bytes + 2 length bytes + header + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * t.numel());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    t.with_values(|v| {
        v.iter()
            .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()))
    })?;
    crate::atomic_file::write_atomic(path, &bytes)
}

/// Read a `.npy` file into an f32 tensor.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_npy(&bytes).map_err(|msg| Error::format(path.display(), msg))
}

#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

fn parse_npy(bytes: &[u8]) -> std::result::Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header_end = header_start + header_len;
    if bytes.len() < header_end {
        return Err("truncated header".into());
    }
    let header =
        std::str::from_utf8(&bytes[header_start..header_end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").ok_or("header has no 'fortran_order'")?;
    let fortran = match fortran.trim() {
        "True" => true,
        "False" => false,
        other => return Err(format!("bad fortran_order {other}")),
    };
    let shape_txt = dict_value(header, "shape").ok_or("header has no 'shape'")?;
    let shape: Vec<usize> = shape_txt
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape entry `{s}`"))
        })
        .collect::<std::result::Result<_, _>>()?;
    // `split_at` would panic on an empty descr or one that opens with a multi-byte character.
    let (endian, code) = match descr.char_indices().nth(1) {
        Some((i, _)) => descr.split_at(i),
        None => return Err(format!("'descr': unsupported dtype '{descr}'")),
    };
    let big_endian = match endian {
        "<" | "|" | "=" => false,
        ">" => true,
        _ => return Err(format!("'descr': unsupported dtype '{descr}'")),
    };
    let dtype = match code {
        "f4" => Dtype::F32,
        "f8" => Dtype::F64,
        "i8" => Dtype::I64,
        "i4" => Dtype::I32,
        "u1" => Dtype::U8,
        "b1" => Dtype::Bool,
        _ => {
            return Err(format!(
                "'descr': unsupported dtype '{descr}' (supported: f4, f8, i8, i4, u1, b1)"
            ))
        }
    };
    let width: usize = match dtype {
        Dtype::F32 | Dtype::I32 => 4,
        Dtype::F64 | Dtype::I64 => 8,
        Dtype::U8 | Dtype::Bool => 1,
    };
    // Checked: a crafted shape such as (2^32, 2^32) must not wrap to a small count.
    let needed = shape
        .iter()
        .try_fold(width, |n, &d| n.checked_mul(d))
        .ok_or_else(|| {
            format!("shape {shape:?} has more elements than this machine can address")
        })?;
    let n = needed / width;
    let body = &bytes[header_end..];
    if body.len() < needed {
        return Err(format!(
            "data holds {} bytes, shape {shape:?} needs {needed}",
            body.len(),
        ));
    }
    let mut values = Vec::with_capacity(n);
    for chunk in body[..n * width].chunks_exact(width) {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(chunk);
        if big_endian {
            b[..width].reverse();
        }
        let v = match dtype {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F64 => f64::from_le_bytes(b) as f32,
            Dtype::I64 => i64::from_le_bytes(b) as f32,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            Dtype::U8 => b[0] as f32,
            Dtype::Bool => (b[0] != 0) as u8 as f32,
        };
        values.push(v);
    }
    if fortran && shape.len() > 1 {
        // Column-major on disk: element (i0, i1, ...) sits at sum(i_k * prod(shape[..k])).
        let mut c_order = vec![0f32; n];
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let f_strides = super::Shape(rev).contiguous_strides();
        let c_strides: Vec<usize> = f_strides.into_iter().rev().collect();
        for (dst, src) in super::StridedIter::with(&shape, &c_strides, 0).enumerate() {
            c_order[dst] = values[src];
        }
        values = c_order;
    }
    Tensor::from_vec(values, shape).map_err(|e| e.to_string())
}

/// The text after `'key':` in a Python dict literal, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}':");
    let pat2 = format!("\"{key}\":");
    let start = header
        .find(&pat1)
        .map(|i| i + pat1.len())
        .or_else(|| header.find(&pat2).map(|i| i + pat2.len()))?;
    let rest = &header[start..];
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}
