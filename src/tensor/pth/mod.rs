//! PyTorch checkpoints (`.pth`, `.pt`) as `torch.save` writes a state dict or a training
//! checkpoint, read without Python.
//!
//! Two containers:
//! - the zip archive of PyTorch ≥ 1.6: `<prefix>/data.pkl` (the pickled object),
//!   `<prefix>/data/<key>` (one raw storage per key, little-endian unless `<prefix>/byteorder`
//!   says `big`), `<prefix>/version` or `<prefix>/.data/version`. `<prefix>` is `archive` or the
//!   saved file's stem. Members are stored uncompressed (torch never deflates them); a
//!   compressed member is refused by name;
//! - the legacy stream of older releases (`_use_new_zipfile_serialization=False`): five pickles
//!   (magic number, protocol 1001, system info, the object, the storage keys), then each storage
//!   as an 8-byte element count and its raw bytes.
//!
//! The pickle machine below runs the opcodes of protocols 2 to 5 that pickling data emits and
//! calls nothing: tensors come from `torch._utils._rebuild_tensor_v2` (also `_rebuild_tensor`,
//! `_rebuild_parameter`, `_rebuild_parameter_with_state`) over storages named by persistent ids
//! (`('storage', torch.FloatStorage, key, location, numel)`), `collections.OrderedDict` builds a
//! dict, `_codecs.encode` bytes and `builtins.set` sets. Any other class becomes an opaque object
//! that is an error only where a tensor is needed (a YOLOX checkpoint's `best_ap` is a numpy
//! scalar; nothing reads it). Text-mode opcodes (protocol 0/1) and unknown opcodes are errors that
//! name the opcode and its offset.
//!
//! The state dict is the top-level dict's `model` entry (what YOLOX's trainer saves, next to
//! `start_epoch`, `optimizer`, `best_ap`) or the top-level dict itself when every value is a
//! tensor. Storages are read only for the state dict's tensors; float16, bfloat16, float64 and
//! integer storages convert to f32 (`num_batches_tracked`, int64, is read like the others so
//! callers can ignore it by name). Every malformed input is an error naming the file and what in
//! it is wrong; nothing here panics on a file's content.

mod legacy;
mod machine;
mod opcodes;
mod pickle;
mod state_dict;
mod zip;

use legacy::*;
use machine::*;
use pickle::*;
use state_dict::*;
use zip::*;

use std::collections::BTreeMap;
use std::path::Path;

use super::Tensor;
use crate::{Error, Result};

/// Element type of a storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PthDtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl PthDtype {
    fn from_storage_class(class: &str) -> Option<PthDtype> {
        let (module, name) = class.rsplit_once('.')?;
        if module != "torch" && module != "torch.cuda" {
            return None;
        }
        Some(match name {
            "FloatStorage" => PthDtype::F32,
            "DoubleStorage" => PthDtype::F64,
            "HalfStorage" => PthDtype::F16,
            "BFloat16Storage" => PthDtype::BF16,
            "LongStorage" => PthDtype::I64,
            "IntStorage" => PthDtype::I32,
            "ShortStorage" => PthDtype::I16,
            "CharStorage" => PthDtype::I8,
            "ByteStorage" => PthDtype::U8,
            "BoolStorage" => PthDtype::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            PthDtype::F64 | PthDtype::I64 => 8,
            PthDtype::F32 | PthDtype::I32 => 4,
            PthDtype::F16 | PthDtype::BF16 | PthDtype::I16 => 2,
            PthDtype::I8 | PthDtype::U8 | PthDtype::Bool => 1,
        }
    }

    /// PyTorch's name (`float32`, `bfloat16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            PthDtype::F32 => "float32",
            PthDtype::F64 => "float64",
            PthDtype::F16 => "float16",
            PthDtype::BF16 => "bfloat16",
            PthDtype::I64 => "int64",
            PthDtype::I32 => "int32",
            PthDtype::I16 => "int16",
            PthDtype::I8 => "int8",
            PthDtype::U8 => "uint8",
            PthDtype::Bool => "bool",
        }
    }

    /// One element as f32 (`b` holds exactly `size()` bytes in file order).
    fn decode(self, b: &[u8], big_endian: bool) -> f32 {
        let mut a = [0u8; 8];
        let n = self.size();
        a[..n].copy_from_slice(&b[..n]);
        if big_endian {
            a[..n].reverse();
        }
        match self {
            PthDtype::F32 => f32::from_le_bytes([a[0], a[1], a[2], a[3]]),
            PthDtype::F64 => f64::from_le_bytes(a) as f32,
            PthDtype::F16 => half::f16::from_le_bytes([a[0], a[1]]).to_f32(),
            PthDtype::BF16 => half::bf16::from_le_bytes([a[0], a[1]]).to_f32(),
            PthDtype::I64 => i64::from_le_bytes(a) as f32,
            PthDtype::I32 => i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f32,
            PthDtype::I16 => i16::from_le_bytes([a[0], a[1]]) as f32,
            PthDtype::I8 => a[0] as i8 as f32,
            PthDtype::U8 => a[0] as f32,
            PthDtype::Bool => (a[0] != 0) as u8 as f32,
        }
    }
}

/// Which object of the file the state dict was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PthLayout {
    /// The saved object is a state dict (every value a tensor).
    StateDict,
    /// A checkpoint dict; the state dict is its `model` entry. `keys` are all its keys.
    Checkpoint { keys: Vec<String> },
}

/// The container the file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PthFormat {
    /// `torch.save` since PyTorch 1.6.
    Zip,
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and older releases.
    Legacy,
}

/// The state dict of a PyTorch checkpoint, as f32 tensors.
pub struct PthFile {
    pub tensors: BTreeMap<String, Tensor>,
    /// The element type each tensor had in the file.
    pub dtypes: BTreeMap<String, PthDtype>,
    pub layout: PthLayout,
    pub format: PthFormat,
}

/// Whether `path` should be read as a PyTorch checkpoint rather than safetensors: a zip archive
/// or a pickle by content, or (for a file too short or unreadable to tell) a name ending in
/// `.pth`, `.pt`, `.pkl` or `.bin`. A safetensors file (an 8-byte length, then `{`) is not.
pub fn is_pytorch_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 9];
    let n = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                match f.read(&mut head[n..])? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        })
        .unwrap_or(0);
    if n == 9 && head[8] == b'{' {
        return false;
    }
    if n >= 4 && &head[..4] == b"PK\x03\x04" || n >= 2 && head[0] == 0x80 && head[1] <= 5 {
        return true;
    }
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["pth", "pt", "pkl", "bin"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Read the state dict of a `torch.save` file (see the module documentation).
pub fn read_pth(path: &Path) -> Result<PthFile> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map, dropped before returning (as in safetensors_io).
    let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|msg| Error::format(path.display(), msg))
}

/// [`read_pth`] on bytes in memory; errors are messages without the file name.
pub fn parse(bytes: &[u8]) -> std::result::Result<PthFile, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        parse_zip_checkpoint(bytes)
    } else if bytes.len() >= 2 && bytes[0] == 0x80 {
        parse_legacy(bytes)
    } else if bytes.starts_with(b"PK") {
        Err("a zip archive that does not start with a member (damaged?)".into())
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Err(format!(
            "not a PyTorch checkpoint: neither a zip archive (torch.save since PyTorch 1.6) nor a \
             pickle (older torch.save); it starts with bytes [{}]",
            head.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_of_a_known_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn negative_and_large_longs() {
        // LONG1 -2 (0xfe), LONG1 2**64 (9 bytes), TUPLE2, STOP.
        let p = b"\x80\x02\x8a\x01\xfe\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01\x86.";
        let mut heap = Heap::default();
        let (v, end) = unpickle(p, 0, &mut heap, "test").unwrap();
        assert_eq!(end, p.len());
        let items = heap.sequence(&v).unwrap();
        assert!(matches!(items[0], Value::Int(-2)));
        assert!(matches!(&items[1], Value::BigInt(b) if b.len() == 9));
    }
}
