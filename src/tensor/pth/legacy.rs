//! The legacy `torch.save` stream (`_use_new_zipfile_serialization=False`): five pickles, then
//! each storage as an element count and its raw bytes.

use std::collections::HashMap;

use super::*;

/// torch.serialization.MAGIC_NUMBER, 0x1950a86a20f9469cfc6c, as LONG1's little-endian bytes.
pub(super) const LEGACY_MAGIC: [u8; 10] =
    [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

pub(super) fn parse_legacy(b: &[u8]) -> std::result::Result<PthFile, String> {
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
