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

use std::collections::{BTreeMap, HashMap};
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

// ---------------------------------------------------------------------------------------------
// Zip container (stored members only, zip64 included)

struct ZipMember {
    name: String,
    method: u16,
    crc: u32,
    compressed: u64,
    size: u64,
    local_offset: u64,
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

const TRUNCATED_ZIP: &str = "a zip archive without its central directory (truncated or damaged)";

/// The central directory's members.
fn zip_members(b: &[u8]) -> std::result::Result<Vec<ZipMember>, String> {
    // End of central directory: 22 bytes plus a comment of up to 65,535, at the end.
    let lowest = b.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))
        .ok_or(TRUNCATED_ZIP)?;
    let bad = || TRUNCATED_ZIP.to_string();
    let mut count = le16(b, eocd + 10).ok_or_else(bad)? as u64;
    let mut cd_size = le32(b, eocd + 12).ok_or_else(bad)? as u64;
    let mut cd_offset = le32(b, eocd + 16).ok_or_else(bad)? as u64;
    if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // Zip64: the locator sits just before the end record and points at the zip64 record.
        let loc = eocd.checked_sub(20).ok_or_else(bad)?;
        if !b[loc..].starts_with(b"PK\x06\x07") {
            return Err("a zip64 archive without its zip64 locator (damaged)".into());
        }
        let rec = le64(b, loc + 8).ok_or_else(bad)? as usize;
        if !b.get(rec..).is_some_and(|r| r.starts_with(b"PK\x06\x06")) {
            return Err("a zip64 archive without its zip64 end record (damaged)".into());
        }
        count = le64(b, rec + 32).ok_or_else(bad)?;
        cd_size = le64(b, rec + 40).ok_or_else(bad)?;
        cd_offset = le64(b, rec + 48).ok_or_else(bad)?;
    }
    let end = cd_offset.checked_add(cd_size).ok_or_else(bad)?;
    if end > b.len() as u64 {
        return Err(format!(
            "a zip archive whose central directory (bytes {cd_offset}..{end}) lies past the \
             file's end ({} bytes): truncated",
            b.len()
        ));
    }
    let mut members = Vec::new();
    let mut at = cd_offset as usize;
    for i in 0..count {
        let broken = || format!("zip central directory entry {i} at byte {at} is damaged");
        if !b.get(at..).is_some_and(|r| r.starts_with(b"PK\x01\x02")) {
            return Err(broken());
        }
        let method = le16(b, at + 10).ok_or_else(broken)?;
        let crc = le32(b, at + 16).ok_or_else(broken)?;
        let mut compressed = le32(b, at + 20).ok_or_else(broken)? as u64;
        let mut size = le32(b, at + 24).ok_or_else(broken)? as u64;
        let name_len = le16(b, at + 28).ok_or_else(broken)? as usize;
        let extra_len = le16(b, at + 30).ok_or_else(broken)? as usize;
        let comment_len = le16(b, at + 32).ok_or_else(broken)? as usize;
        let mut local_offset = le32(b, at + 42).ok_or_else(broken)? as u64;
        let name = b.get(at + 46..at + 46 + name_len).ok_or_else(broken)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(broken)?;
        // Zip64 extended information: the 64-bit values of the fields that read 0xFFFFFFFF,
        // in this order.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = le16(extra, e).ok_or_else(broken)?;
            let len = le16(extra, e + 2).ok_or_else(broken)? as usize;
            let body = extra.get(e + 4..e + 4 + len).ok_or_else(broken)?;
            if id == 1 {
                let mut k = 0;
                for field in [&mut size, &mut compressed, &mut local_offset] {
                    if *field == 0xFFFF_FFFF {
                        *field = le64(body, k).ok_or_else(broken)?;
                        k += 8;
                    }
                }
            }
            e += 4 + len;
        }
        members.push(ZipMember {
            name,
            method,
            crc,
            compressed,
            size,
            local_offset,
        });
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(members)
}

/// A member's bytes (stored members only), checked against its CRC-32.
fn zip_read<'a>(b: &'a [u8], m: &ZipMember) -> std::result::Result<&'a [u8], String> {
    if m.method != 0 {
        return Err(format!(
            "zip member `{}` is compressed (method {}); torch.save stores members uncompressed: \
             re-save the checkpoint with torch.save",
            m.name, m.method
        ));
    }
    let at = m.local_offset as usize;
    let broken = || format!("zip member `{}`: its local header is damaged", m.name);
    if m.local_offset > b.len() as u64 || !b[at..].starts_with(b"PK\x03\x04") {
        return Err(broken());
    }
    let start = at
        + 30
        + le16(b, at + 26).ok_or_else(broken)? as usize
        + le16(b, at + 28).ok_or_else(broken)? as usize;
    let end = (start as u64).checked_add(m.compressed);
    let data = end
        .filter(|&e| m.compressed == m.size && e <= b.len() as u64)
        .and_then(|e| b.get(start..e as usize))
        .ok_or_else(|| {
            format!(
                "zip member `{}`: {} bytes from byte {start} lie past the file's end ({} bytes): \
                 truncated",
                m.name,
                m.size,
                b.len()
            )
        })?;
    let crc = crc32(data);
    if crc != m.crc {
        return Err(format!(
            "zip member `{}`: CRC-32 {crc:08x} does not match the archive's {:08x} (damaged)",
            m.name, m.crc
        ));
    }
    Ok(data)
}

/// CRC-32 (IEEE 802.3, the zip checksum), a byte at a time.
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &x in data {
        c = table[((c ^ x as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

fn parse_zip_checkpoint(b: &[u8]) -> std::result::Result<PthFile, String> {
    let members = zip_members(b)?;
    let pkl = members
        .iter()
        .filter(|m| {
            m.name
                .strip_suffix("/data.pkl")
                .is_some_and(|p| !p.is_empty() && !p.contains('/'))
        })
        .min_by_key(|m| m.name.len())
        .ok_or_else(|| {
            let names: Vec<&str> = members.iter().take(4).map(|m| m.name.as_str()).collect();
            format!(
                "a zip archive without `<name>/data.pkl`, so not a torch.save file (members: {}{})",
                names.join(", "),
                if members.len() > 4 { ", ..." } else { "" }
            )
        })?;
    let prefix = pkl.name.trim_end_matches("data.pkl").to_string();
    let by_name: HashMap<&str, &ZipMember> = members.iter().map(|m| (m.name.as_str(), m)).collect();
    let big_endian = match by_name.get(format!("{prefix}byteorder").as_str()) {
        None => false,
        Some(m) => match zip_read(b, m)? {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(format!(
                    "`{prefix}byteorder` says `{}` (little or big)",
                    String::from_utf8_lossy(other)
                ))
            }
        },
    };
    let mut heap = Heap::default();
    let (top, _) = unpickle(zip_read(b, pkl)?, 0, &mut heap, &pkl.name)?;
    let storage = |key: &str| -> std::result::Result<&[u8], String> {
        let name = format!("{prefix}data/{key}");
        let m = by_name
            .get(name.as_str())
            .ok_or_else(|| format!("the archive has no member `{name}`"))?;
        zip_read(b, m)
    };
    extract(&heap, &top, &storage, big_endian, PthFormat::Zip)
}

// ---------------------------------------------------------------------------------------------
// Legacy stream

/// torch.serialization.MAGIC_NUMBER, 0x1950a86a20f9469cfc6c, as LONG1's little-endian bytes.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn parse_legacy(b: &[u8]) -> std::result::Result<PthFile, String> {
    let mut heap = Heap::default();
    let (magic, at) = unpickle(b, 0, &mut heap, "the legacy header")?;
    if !matches!(&magic, Value::BigInt(m) if m[..] == LEGACY_MAGIC) {
        return Err(
            "a pickle, but not one torch.save wrote (no torch magic number first): only \
             torch.save files are read"
                .into(),
        );
    }
    let (protocol, at) = unpickle(b, at, &mut heap, "the legacy header")?;
    if !matches!(protocol, Value::Int(1001)) {
        return Err(format!(
            "legacy torch.save protocol {} (only 1001 is read)",
            heap.describe(&protocol)
        ));
    }
    let (sys_info, at) = unpickle(b, at, &mut heap, "the legacy header")?;
    let big_endian = matches!(
        heap.dict_get(&sys_info, "little_endian"),
        Some(Value::Bool(false))
    );
    let (top, at) = unpickle(b, at, &mut heap, "the pickled object")?;
    let (keys, mut at) = unpickle(b, at, &mut heap, "the storage list")?;
    let keys = match heap.sequence(&keys) {
        Some(items) => items
            .iter()
            .map(|k| match k {
                Value::Str(s) => Ok(s.clone()),
                other => Err(format!(
                    "the storage list holds {}, not a key",
                    heap.describe(other)
                )),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        None => return Err("the legacy storage list is not a list".into()),
    };
    // Each storage: its element count (int64) and its bytes; the element size comes from the
    // storage's class in the object's persistent ids.
    let dtype_of: HashMap<&str, &StorageRef> = heap
        .objects
        .iter()
        .filter_map(|o| match o {
            Obj::Storage(s) => Some((s.key.as_str(), s)),
            _ => None,
        })
        .collect();
    let mut spans: HashMap<String, (usize, usize)> = HashMap::new();
    for key in keys {
        let st = dtype_of
            .get(key.as_str())
            .ok_or_else(|| format!("storage `{key}` is listed but no tensor uses it"))?;
        let dtype = st.dtype.map_err(|_| {
            format!(
                "storage `{key}` is a `{}`, which is not read (float, half, bfloat16, double and \
                 integer storages are)",
                st.class
            )
        })?;
        let numel = le64(b, at).ok_or_else(|| {
            format!("storage `{key}`: the file ends at byte {at}, before its length (truncated)")
        })?;
        let start = at + 8;
        let len = numel
            .checked_mul(dtype.size() as u64)
            .filter(|&n| n <= (b.len() - start) as u64)
            .ok_or_else(|| {
                format!(
                    "storage `{key}`: {numel} elements of {} from byte {start} lie past the file's \
                     end ({} bytes): truncated",
                    dtype.name(),
                    b.len()
                )
            })? as usize;
        spans.insert(key, (start, start + len));
        at = start + len;
    }
    let storage = |key: &str| -> std::result::Result<&[u8], String> {
        let &(s, e) = spans
            .get(key)
            .ok_or_else(|| format!("storage `{key}` is not in the file's storage list"))?;
        Ok(&b[s..e])
    };
    extract(&heap, &top, &storage, big_endian, PthFormat::Legacy)
}

// ---------------------------------------------------------------------------------------------
// Pickle machine

/// A pickled value; containers and objects live in [`Heap::objects`], so a value is cheap to
/// copy, the memo shares containers as Python does, and dropping nested values never recurses.
#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// A class or function: `module.name`.
    Global(String),
    Ref(usize),
}

#[derive(Debug)]
enum Obj {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Entries in insertion order; a key set twice keeps both and the later wins on lookup.
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// An instance of a class this reader does not build (kept by name for messages).
    Instance(String),
    Storage(StorageRef),
    Tensor(TensorRef),
}

#[derive(Clone, Debug)]
struct StorageRef {
    key: String,
    /// The storage class, `torch.FloatStorage`.
    class: String,
    dtype: std::result::Result<PthDtype, ()>,
    numel: u64,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    offset: u64,
    size: Vec<u64>,
    stride: Vec<u64>,
}

/// Bounds that keep a hostile pickle from exhausting memory (a real state dict uses far less).
const MAX_STACK: usize = 1 << 20;
const MAX_OBJECTS: usize = 1 << 24;

#[derive(Default)]
struct Heap {
    objects: Vec<Obj>,
}

impl Heap {
    fn alloc(&mut self, o: Obj) -> std::result::Result<Value, String> {
        if self.objects.len() >= MAX_OBJECTS {
            return Err(format!("more than {MAX_OBJECTS} objects in the pickle"));
        }
        self.objects.push(o);
        Ok(Value::Ref(self.objects.len() - 1))
    }

    fn get(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Ref(i) => self.objects.get(*i),
            _ => None,
        }
    }

    fn sequence(&self, v: &Value) -> Option<&[Value]> {
        match self.get(v)? {
            Obj::List(x) | Obj::Tuple(x) => Some(x),
            _ => None,
        }
    }

    fn dict(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.get(v)? {
            Obj::Dict(x) => Some(x),
            _ => None,
        }
    }

    fn dict_get(&self, v: &Value, key: &str) -> Option<&Value> {
        self.dict(v)?
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
            .map(|(_, v)| v)
    }

    /// What a value is, for messages: "an int (3)", "an object of class `numpy.dtype`".
    fn describe(&self, v: &Value) -> String {
        match v {
            Value::None => "None".into(),
            Value::Bool(b) => format!("a bool ({})", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("an int ({i})"),
            Value::BigInt(_) => "a large int".into(),
            Value::Float(f) => format!("a float ({f})"),
            Value::Str(s) => format!("a string ({s:?})"),
            Value::Bytes(b) => format!("bytes ({} long)", b.len()),
            Value::Global(g) => format!("the class or function `{g}`"),
            Value::Ref(_) => match self.get(v) {
                Some(Obj::List(x)) => format!("a list of {}", x.len()),
                Some(Obj::Tuple(x)) => format!("a tuple of {}", x.len()),
                Some(Obj::Dict(x)) => format!("a dict of {}", x.len()),
                Some(Obj::Set(x)) => format!("a set of {}", x.len()),
                Some(Obj::Instance(c)) => {
                    format!("an object of class `{c}`, which this reader does not build")
                }
                Some(Obj::Storage(_)) => "a bare storage".into(),
                Some(Obj::Tensor(_)) => "a tensor".into(),
                None => "a dangling reference".into(),
            },
        }
    }
}

fn opcode_name(op: u8) -> String {
    let name = match op {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return format!("0x{op:02x} (not a pickle opcode)"),
    };
    format!("{name} (0x{op:02x})")
}

struct Machine<'a, 'h> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    heap: &'h mut Heap,
}

impl Machine<'_, '_> {
    fn take(&mut self, n: usize) -> std::result::Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(format!(
                "needs {n} more bytes at byte {}, but the pickle ends at byte {} (truncated)",
                self.pos,
                self.data.len()
            )),
        }
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> std::result::Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn len_bytes(&mut self, n: u64) -> std::result::Result<Vec<u8>, String> {
        let n = usize::try_from(n).map_err(|_| format!("a length of {n} bytes"))?;
        Ok(self.take(n)?.to_vec())
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a text line without its end (truncated)")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) -> std::result::Result<(), String> {
        if self.stack.len() >= MAX_STACK {
            return Err(format!("a stack deeper than {MAX_STACK} values"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> std::result::Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("pops an empty stack".into());
        }
        Ok(self.stack.pop().unwrap_or(Value::None))
    }

    fn top(&self) -> std::result::Result<&Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("reads the top of an empty stack".into());
        }
        self.stack.last().ok_or_else(|| "an empty stack".into())
    }

    fn pop_mark(&mut self) -> std::result::Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn alloc_push(&mut self, o: Obj) -> std::result::Result<(), String> {
        let v = self.heap.alloc(o)?;
        self.push(v)
    }

    /// The object a container opcode adds to (the stack's top): its index in the heap.
    fn target(&self, what: &str) -> std::result::Result<usize, String> {
        match self.top()? {
            Value::Ref(i) => Ok(*i),
            other => Err(format!("{what} on {}", self.heap.describe(other))),
        }
    }

    fn add_items(&mut self, items: Vec<Value>, what: &str) -> std::result::Result<(), String> {
        let i = self.target(what)?;
        match &mut self.heap.objects[i] {
            Obj::List(l) | Obj::Set(l) => l.extend(items),
            // A subclass of list or set this reader does not build: its content is not needed.
            Obj::Instance(_) => {}
            _ => {
                let d = self.heap.describe(&Value::Ref(i));
                return Err(format!("{what} on {d}"));
            }
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> std::result::Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!(
                "SETITEMS with an odd number of values ({})",
                items.len()
            ));
        }
        let i = self.target("SETITEM")?;
        match &mut self.heap.objects[i] {
            Obj::Dict(d) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            Obj::Instance(_) => {}
            _ => {
                let d = self.heap.describe(&Value::Ref(i));
                return Err(format!("SETITEM on {d}"));
            }
        }
        Ok(())
    }

    fn run(&mut self) -> std::result::Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8().map_err(|_| {
                format!(
                    "ends at byte {} without its STOP opcode (truncated)",
                    self.data.len()
                )
            })?;
            self.step(op)
                .map_err(|e| format!("opcode {} at byte {at}: {e}", opcode_name(op)))?;
            if op == b'.' {
                return self.pop().map_err(|e| format!("STOP at byte {at}: {e}"));
            }
        }
    }

    fn step(&mut self, op: u8) -> std::result::Result<(), String> {
        match op {
            0x80 => {
                let p = self.u8()?;
                if p > 5 {
                    return Err(format!("pickle protocol {p} (at most 5 is read)"));
                }
            }
            0x95 => {
                self.u64()?;
            }
            b'.' => {}
            b'(' => self.marks.push(self.stack.len()),
            b'}' => self.alloc_push(Obj::Dict(Vec::new()))?,
            b']' => self.alloc_push(Obj::List(Vec::new()))?,
            b')' => self.alloc_push(Obj::Tuple(Vec::new()))?,
            0x8f => self.alloc_push(Obj::Set(Vec::new()))?,
            b'd' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Dict(Vec::new()))?;
                self.set_items(items)?;
            }
            b'l' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::List(items))?;
            }
            b't' => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Tuple(items))?;
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.alloc_push(Obj::Set(items))?;
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop()?);
                }
                items.reverse();
                self.alloc_push(Obj::Tuple(items))?;
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v as i64))?;
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64))?;
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v as i64))?;
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as u64
                } else {
                    self.u32()? as u64
                };
                let bytes = self.len_bytes(n)?;
                let v = if bytes.len() <= 8 {
                    let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        0xFF
                    } else {
                        0
                    };
                    let mut a = [fill; 8];
                    a[..bytes.len()].copy_from_slice(&bytes);
                    Value::Int(i64::from_le_bytes(a))
                } else {
                    Value::BigInt(bytes)
                };
                self.push(v)?;
            }
            b'G' => {
                let b = self.take(8)?;
                let v = f64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
                self.push(Value::Float(v))?;
            }
            b'N' => self.push(Value::None)?,
            0x88 => self.push(Value::Bool(true))?,
            0x89 => self.push(Value::Bool(false))?,
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32()? as u64,
                    0x8c => self.u8()? as u64,
                    _ => self.u64()?,
                };
                let bytes = self.len_bytes(n)?;
                let s = String::from_utf8(bytes).map_err(|_| "a string that is not UTF-8")?;
                self.push(Value::Str(s))?;
            }
            b'T' | b'U' => {
                // Python 2 `str`: bytes, read as Latin-1 text.
                let n = if op == b'T' {
                    self.u32()? as u64
                } else {
                    self.u8()? as u64
                };
                let bytes = self.len_bytes(n)?;
                self.push(Value::Str(bytes.iter().map(|&c| c as char).collect()))?;
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32()? as u64,
                    b'C' => self.u8()? as u64,
                    _ => self.u64()?,
                };
                let bytes = self.len_bytes(n)?;
                self.push(Value::Bytes(bytes))?;
            }
            b'q' | b'r' | 0x94 => {
                let id = match op {
                    b'q' => self.u8()? as u32,
                    b'r' => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let v = self.top()?.clone();
                self.memo.insert(id, v);
            }
            b'h' | b'j' => {
                let id = if op == b'h' {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                let v = self
                    .memo
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| format!("memo entry {id} was never stored"))?;
                self.push(v)?;
            }
            b'a' => {
                let v = self.pop()?;
                self.add_items(vec![v], "APPEND")?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.add_items(items, "APPENDS")?;
            }
            0x90 => {
                let items = self.pop_mark()?;
                self.add_items(items, "ADDITEMS")?;
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.push(Value::Global(format!("{module}.{name}")))?;
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        self.push(Value::Global(format!("{m}.{n}")))?
                    }
                    _ => return Err("module and name are not strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(&callable, &args)?;
                self.push(v)?;
            }
            0x81 | 0x92 => {
                if op == 0x92 {
                    self.pop()?; // kwargs
                }
                let args = self.pop()?;
                let class = self.pop()?;
                let v = match &class {
                    Value::Global(g) if g == "collections.OrderedDict" => {
                        self.heap.alloc(Obj::Dict(Vec::new()))?
                    }
                    Value::Global(g) => self.heap.alloc(Obj::Instance(g.clone()))?,
                    other => {
                        return Err(format!(
                            "creates an instance of {} with {}",
                            self.heap.describe(other),
                            self.heap.describe(&args)
                        ))
                    }
                };
                self.push(v)?;
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                match self.heap.get(&target) {
                    // Attributes of a dict (a state dict's `_metadata`), a tensor or an opaque
                    // object: not needed.
                    Some(Obj::Dict(_) | Obj::Tensor(_) | Obj::Instance(_)) => {}
                    _ => {
                        return Err(format!(
                            "sets the state of {} to {}",
                            self.heap.describe(&target),
                            self.heap.describe(&state)
                        ))
                    }
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent_load(&pid)?;
                self.push(v)?;
            }
            b'0' => {
                if self.stack.len() > self.marks.last().copied().unwrap_or(0) {
                    self.pop()?;
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)?;
            }
            _ => {
                return Err(
                    "not read here: torch.save writes pickle protocol 2, and this reader takes \
                     the binary opcodes of protocols 2 to 5 that pickled data uses"
                        .into(),
                )
            }
        }
        Ok(())
    }

    fn int_arg(&self, v: &Value, what: &str) -> std::result::Result<u64, String> {
        match v {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            other => Err(format!(
                "{what} is {}, not a non-negative int",
                self.heap.describe(other)
            )),
        }
    }

    fn ints_arg(&self, v: &Value, what: &str) -> std::result::Result<Vec<u64>, String> {
        let items = self
            .heap
            .sequence(v)
            .ok_or_else(|| format!("{what} is {}, not a tuple", self.heap.describe(v)))?;
        items.iter().map(|x| self.int_arg(x, what)).collect()
    }

    /// `('storage', storage_class, key, location, numel[, view_metadata])`.
    fn persistent_load(&mut self, pid: &Value) -> std::result::Result<Value, String> {
        let items = self.heap.sequence(pid).map(<[Value]>::to_vec);
        let storage = match items.as_deref() {
            Some([Value::Str(kind), class, key, _location, numel, rest @ ..])
                if kind == "storage" && rest.len() <= 1 =>
            {
                if rest.first().is_some_and(|v| !matches!(v, Value::None)) {
                    return Err(
                        "a storage view (PyTorch < 0.4): re-save the checkpoint with a current \
                         torch.save"
                            .into(),
                    );
                }
                let class = match class {
                    Value::Global(g) => g.clone(),
                    other => {
                        return Err(format!(
                            "a storage whose class is {}",
                            self.heap.describe(other)
                        ))
                    }
                };
                let key = match key {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => {
                        return Err(format!(
                            "a storage whose key is {}",
                            self.heap.describe(other)
                        ))
                    }
                };
                StorageRef {
                    dtype: PthDtype::from_storage_class(&class).ok_or(()),
                    class,
                    key,
                    numel: self.int_arg(numel, "the storage's size")?,
                }
            }
            _ => {
                return Err(format!(
                    "persistent id {}: only `('storage', class, key, location, size)` is read",
                    self.heap.describe(pid)
                ))
            }
        };
        self.heap.alloc(Obj::Storage(storage))
    }

    fn reduce(&mut self, callable: &Value, args: &Value) -> std::result::Result<Value, String> {
        let name = match callable {
            Value::Global(g) => g.clone(),
            other => return Err(format!("calls {}", self.heap.describe(other))),
        };
        let argv = self.heap.sequence(args).map(<[Value]>::to_vec);
        let bad_args = |heap: &Heap| {
            format!(
                "`{name}` with arguments {} it does not take",
                heap.describe(args)
            )
        };
        match name.as_str() {
            "collections.OrderedDict" | "builtins.dict" | "__builtin__.dict" => {
                let mut pairs = Vec::new();
                if let Some(first) = argv.as_ref().and_then(|a| a.first()) {
                    for item in self.heap.sequence(first).unwrap_or(&[]) {
                        match self.heap.sequence(item) {
                            Some([k, v]) => pairs.push((k.clone(), v.clone())),
                            _ => return Err(bad_args(self.heap)),
                        }
                    }
                }
                self.heap.alloc(Obj::Dict(pairs))
            }
            "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
                let argv = argv.ok_or_else(|| bad_args(self.heap))?;
                if argv.len() < 4 {
                    return Err(bad_args(self.heap));
                }
                let storage = match self.heap.get(&argv[0]) {
                    Some(Obj::Storage(s)) => s.clone(),
                    _ => {
                        return Err(format!(
                            "`{name}` of {}, not a storage",
                            self.heap.describe(&argv[0])
                        ))
                    }
                };
                let t = TensorRef {
                    storage,
                    offset: self.int_arg(&argv[1], "the storage offset")?,
                    size: self.ints_arg(&argv[2], "the size")?,
                    stride: self.ints_arg(&argv[3], "the stride")?,
                };
                if t.size.len() != t.stride.len() {
                    return Err(format!(
                        "a tensor of size {:?} with strides {:?}",
                        t.size, t.stride
                    ));
                }
                self.heap.alloc(Obj::Tensor(t))
            }
            "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
                match argv.as_ref().and_then(|a| a.first()) {
                    Some(t) if matches!(self.heap.get(t), Some(Obj::Tensor(_))) => Ok(t.clone()),
                    _ => Err(bad_args(self.heap)),
                }
            }
            "_codecs.encode" => match argv.as_deref() {
                // Protocol 2's bytes: `_codecs.encode(text, 'latin1')`.
                Some([Value::Str(s), Value::Str(_)]) => {
                    Ok(Value::Bytes(s.chars().map(|c| c as u32 as u8).collect()))
                }
                _ => Err(bad_args(self.heap)),
            },
            "builtins.set" | "__builtin__.set" | "builtins.frozenset" => {
                let items = argv
                    .as_ref()
                    .and_then(|a| a.first())
                    .and_then(|l| self.heap.sequence(l))
                    .map(<[Value]>::to_vec)
                    .unwrap_or_default();
                self.heap.alloc(Obj::Set(items))
            }
            _ => self.heap.alloc(Obj::Instance(name)),
        }
    }
}

/// Run one pickle from `start`; returns its value and the position after its STOP.
fn unpickle(
    data: &[u8],
    start: usize,
    heap: &mut Heap,
    what: &str,
) -> std::result::Result<(Value, usize), String> {
    let mut m = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        heap,
    };
    let v = m.run().map_err(|e| format!("{what}: {e}"))?;
    Ok((v, m.pos))
}

// ---------------------------------------------------------------------------------------------
// State dict

fn extract<'a>(
    heap: &Heap,
    top: &Value,
    storage: &dyn Fn(&str) -> std::result::Result<&'a [u8], String>,
    big_endian: bool,
    format: PthFormat,
) -> std::result::Result<PthFile, String> {
    let entries = heap.dict(top).ok_or_else(|| {
        format!(
            "the saved object is {}, not a dict (a state dict or a checkpoint)",
            heap.describe(top)
        )
    })?;
    let key_names: Vec<String> = entries
        .iter()
        .map(|(k, _)| match k {
            Value::Str(s) => s.clone(),
            other => heap.describe(other),
        })
        .collect();
    let is_tensor = |v: &Value| matches!(heap.get(v), Some(Obj::Tensor(_)));
    let (layout, sd) = if let Some(model) = heap.dict_get(top, "model") {
        let sd = heap.dict(model).ok_or_else(|| {
            format!(
                "its `model` entry is {}, not a state dict",
                heap.describe(model)
            )
        })?;
        let mut keys = key_names.clone();
        keys.dedup();
        (PthLayout::Checkpoint { keys }, sd)
    } else if !entries.is_empty() && entries.iter().all(|(_, v)| is_tensor(v)) {
        (PthLayout::StateDict, entries)
    } else {
        let shown: Vec<String> = key_names.iter().take(8).map(|k| format!("`{k}`")).collect();
        let odd = entries
            .iter()
            .find(|(_, v)| !is_tensor(v))
            .map(|(k, v)| {
                let k = match k {
                    Value::Str(s) => s.clone(),
                    other => heap.describe(other),
                };
                format!(" (`{k}` is {}, not a tensor)", heap.describe(v))
            })
            .unwrap_or_default();
        return Err(format!(
            "no `model` entry, and not a state dict either{odd}: its keys are {}{}; YOLOX's \
             trainer saves the weights under `model`, a state dict holds tensors only",
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            },
            if key_names.len() > 8 { ", ..." } else { "" }
        ));
    };
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    let mut cache: HashMap<String, &'a [u8]> = HashMap::new();
    for (k, v) in sd {
        let name = match k {
            Value::Str(s) => s.clone(),
            other => {
                return Err(format!(
                    "the state dict has a key that is {}",
                    heap.describe(other)
                ))
            }
        };
        let t = match heap.get(v) {
            Some(Obj::Tensor(t)) => t,
            _ => {
                return Err(format!(
                    "state dict entry `{name}` is {}, not a tensor",
                    heap.describe(v)
                ))
            }
        };
        let st = &t.storage;
        let dtype = st.dtype.map_err(|_| {
            format!(
                "tensor `{name}` is stored as `{}`, which is not read (float, half, bfloat16, \
                 double, integer and bool storages are)",
                st.class
            )
        })?;
        let bytes = match cache.get(&st.key) {
            Some(b) => *b,
            None => {
                let b = storage(&st.key).map_err(|e| format!("tensor `{name}`: {e}"))?;
                cache.insert(st.key.clone(), b);
                b
            }
        };
        let (values, dims) = materialise(&name, t, dtype, bytes, big_endian)?;
        let tensor = Tensor::from_vec(values, dims).map_err(|e| format!("tensor `{name}`: {e}"))?;
        tensors.insert(name.clone(), tensor);
        dtypes.insert(name, dtype);
    }
    Ok(PthFile {
        tensors,
        dtypes,
        layout,
        format,
    })
}

/// The tensor's elements in row-major order, as f32, and its dims.
fn materialise(
    name: &str,
    t: &TensorRef,
    dtype: PthDtype,
    bytes: &[u8],
    big_endian: bool,
) -> std::result::Result<(Vec<f32>, Vec<usize>), String> {
    let st = &t.storage;
    let item = dtype.size();
    let expected = st.numel.checked_mul(item as u64);
    if expected != Some(bytes.len() as u64) {
        return Err(format!(
            "tensor `{name}`: its storage `{}` holds {} bytes, but the file says {} elements of \
             {} ({} bytes)",
            st.key,
            bytes.len(),
            st.numel,
            dtype.name(),
            expected.map_or("too many".to_string(), |e| e.to_string())
        ));
    }
    let too_big = || format!("tensor `{name}`: size {:?} is too large", t.size);
    let dims: Vec<usize> = t
        .size
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| too_big()))
        .collect::<std::result::Result<_, _>>()?;
    let numel = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(too_big)?;
    if numel == 0 {
        return Ok((Vec::new(), dims));
    }
    // More elements than the storage holds only through zero or overlapping strides, which a
    // state dict does not use; bounded so that a hostile size cannot exhaust memory.
    if numel as u64 > st.numel.max(1 << 24) {
        return Err(format!(
            "tensor `{name}`: size {:?} has more elements than its storage `{}` ({})",
            t.size, st.key, st.numel
        ));
    }
    // The last element the view reads must lie inside the storage.
    let last = t
        .size
        .iter()
        .zip(&t.stride)
        .try_fold(t.offset, |a, (&d, &s)| {
            a.checked_add((d - 1).checked_mul(s)?)
        });
    if last.is_none_or(|l| l >= st.numel) {
        return Err(format!(
            "tensor `{name}`: size {:?} with strides {:?} from offset {} needs more elements than \
             its storage `{}` holds ({})",
            t.size, t.stride, t.offset, st.key, st.numel
        ));
    }
    let mut values = Vec::with_capacity(numel);
    let rank = dims.len();
    let strides: Vec<usize> = t.stride.iter().map(|&s| s as usize).collect();
    let mut index = vec![0usize; rank];
    let mut at = t.offset as usize;
    for _ in 0..numel {
        values.push(dtype.decode(&bytes[at * item..(at + 1) * item], big_endian));
        // Advance the row-major index (the last axis fastest), keeping `at` in step.
        for axis in (0..rank).rev() {
            index[axis] += 1;
            at = at.wrapping_add(strides[axis]);
            if index[axis] < dims[axis] {
                break;
            }
            at = at.wrapping_sub(strides[axis].wrapping_mul(dims[axis]));
            index[axis] = 0;
        }
    }
    Ok((values, dims))
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
