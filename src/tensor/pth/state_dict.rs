//! The state dict out of an unpickled checkpoint, and its tensors read from their storages.

use std::collections::{BTreeMap, HashMap};

use super::*;

pub(super) fn extract<'a>(
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
pub(super) fn materialise(
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
