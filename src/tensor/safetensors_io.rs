//! safetensors files: the checkpoint format. F32, F16 and BF16 convert to and from f32 (`half`);
//! integer and bool tensors (such as BN's `num_batches_tracked`, I64) are read as f32 so callers
//! can ignore them by name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use super::Tensor;
use crate::{Error, Result};

/// Storage precision of a saved file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveDtype {
    F32,
    F16,
    BF16,
}

/// Named tensors in file order of their names (sorted), plus the file's metadata.
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    /// The dtype each tensor had on disk.
    pub dtypes: BTreeMap<String, Dtype>,
    pub metadata: HashMap<String, String>,
}

/// Read every tensor of a safetensors file as f32.
pub fn read_safetensors(path: &Path) -> Result<TensorFile> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and dropped before we return; a concurrent writer truncating
    // the file is the usual mmap caveat, and checkpoints are written by rename.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&mmap)
        .map_err(|e| Error::format(path.display(), format!("not a valid safetensors file: {e}")))?;
    let (_, meta) = SafeTensors::read_metadata(&mmap)
        .map_err(|e| Error::format(path.display(), format!("bad header: {e}")))?;
    let mut tensors = BTreeMap::new();
    let mut dtypes = BTreeMap::new();
    for (name, view) in st.tensors() {
        let values = decode(view.dtype(), view.data())
            .map_err(|msg| Error::format(path.display(), format!("tensor `{name}`: {msg}")))?;
        let t = Tensor::from_vec(values, view.shape().to_vec())
            .map_err(|e| Error::format(path.display(), format!("tensor `{name}`: {e}")))?;
        dtypes.insert(name.clone(), view.dtype());
        tensors.insert(name, t);
    }
    Ok(TensorFile {
        tensors,
        dtypes,
        metadata: meta.metadata().clone().unwrap_or_default(),
    })
}

fn decode(dtype: Dtype, data: &[u8]) -> std::result::Result<Vec<f32>, String> {
    let conv =
        |w: usize, f: &dyn Fn(&[u8]) -> f32| -> Vec<f32> { data.chunks_exact(w).map(f).collect() };
    Ok(match dtype {
        Dtype::F32 => conv(4, &|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        Dtype::F16 => conv(2, &|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::BF16 => conv(2, &|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        Dtype::F64 => conv(8, &|b| {
            f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
        }),
        Dtype::I64 => conv(8, &|b| {
            i64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32
        }),
        Dtype::I32 => conv(4, &|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32),
        Dtype::U8 => conv(1, &|b| b[0] as f32),
        Dtype::I8 => conv(1, &|b| b[0] as i8 as f32),
        Dtype::BOOL => conv(1, &|b| (b[0] != 0) as u8 as f32),
        other => return Err(format!("unsupported dtype {other:?}")),
    })
}

struct Encoded {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &Encoded {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Write named tensors (atomically: temporary file, then rename).
pub fn write_safetensors<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>,
    dtype: SaveDtype,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let encoded: Vec<(String, Encoded)> = tensors
        .into_iter()
        .map(|(name, t)| -> Result<(String, Encoded)> {
            let bytes = t.with_values(|v| match dtype {
                SaveDtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                SaveDtype::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
                SaveDtype::BF16 => v
                    .iter()
                    .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
                    .collect(),
            })?;
            let dt = match dtype {
                SaveDtype::F32 => Dtype::F32,
                SaveDtype::F16 => Dtype::F16,
                SaveDtype::BF16 => Dtype::BF16,
            };
            Ok((
                name.to_string(),
                Encoded {
                    dtype: dt,
                    shape: t.dims().to_vec(),
                    bytes,
                },
            ))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(encoded.iter().map(|(n, e)| (n.as_str(), e)), metadata)
        .map_err(|e| Error::format(path.display(), format!("cannot serialise: {e}")))?;
    crate::atomic_file::write_atomic(path, &bytes)
}
