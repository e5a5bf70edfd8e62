//! bf16 storage (`precision: "bf16"`): activations kept as bf16 bits (`u16`) on the GPU, and the
//! conversions between them and f32 (`f32_to_bf16` / `bf16_to_f32` of elementwise.cu).
//!
//! The rules (DESIGN "Tensors": f32 compute, bf16 a storage format converted at the edges;
//! PyTorch autocast keeps the same split):
//! - In bf16 product mode ([`MatrixPrecision::Bf16`]) a conv without bias writes its output as
//!   bf16 (`Storage::CudaBf16`, straight from cuBLAS's f32 accumulators), the fused BN(+SiLU)
//!   reads that as stored and writes bf16 too, and the ops that carry YOLOX's activations between
//!   convs read and write bf16 as it is: the convs' input (column matrix and pointwise operand
//!   straight from the bits, the tape keeping the bf16 tensor for the weight gradient), `cat`,
//!   max pooling, nearest upsampling and the residual `add`. Their math stays f32 (loads widen,
//!   stores round).
//! - Every other op reads a bf16 tensor through [`crate::tensor::Tensor::with_cuda`], which hands
//!   it an f32 copy: correct everywhere, fast where it matters.
//! - Gradients, parameters, optimizer state and BN statistics stay f32 (the master copies).

use cudarc::driver::{CudaSlice, DevicePtr, LaunchArgs, PushKernelArg};

use super::context::{grid_1d, CudaDevice, MatrixPrecision};
use super::launch::{Arg, DeviceBuffer, Kernel, WritableBuffer};
use super::{to_i64, KernelFile};
use crate::Result;

/// A contiguous device buffer of an op's input, in the format it is stored in.
#[derive(Clone, Copy)]
pub enum CudaValues<'a> {
    F32(&'a CudaSlice<f32>),
    Bf16(&'a CudaSlice<u16>),
}

impl<'a> CudaValues<'a> {
    /// The suffix of the kernels that read this format (`_f32`, `_bf16`).
    pub fn suffix(&self) -> &'static str {
        match self {
            CudaValues::F32(_) => "f32",
            CudaValues::Bf16(_) => "bf16",
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CudaValues::F32(s) => s.len(),
            CudaValues::Bf16(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'a> Arg<'a> for CudaValues<'a> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        match *self {
            CudaValues::F32(s) => args.arg(s),
            CudaValues::Bf16(s) => args.arg(s),
        };
    }
}
impl<'a> DeviceBuffer<'a> for CudaValues<'a> {
    fn elements(&self) -> usize {
        self.len()
    }
}

/// Element types of the buffers an op may keep: f32 values and bf16 bits, with the suffix of
/// their kernels' names (`strided_copy_f32` / `strided_copy_bf16`, ...).
pub trait StoredElement: cudarc::driver::DeviceRepr + Sized {
    const SUFFIX: &'static str;
    /// cuBLAS's name for it (the output type of the bf16 products).
    const CUBLAS_TYPE: cudarc::cublas::sys::cudaDataType;
    /// A buffer of `len` elements with unspecified contents (the kernel writes every one).
    fn alloc(dev: &CudaDevice, len: usize) -> Result<CudaSlice<Self>>;
}
impl StoredElement for f32 {
    const SUFFIX: &'static str = "f32";
    const CUBLAS_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_32F;
    fn alloc(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
        dev.alloc(len)
    }
}
/// bf16 bits.
impl StoredElement for u16 {
    const SUFFIX: &'static str = "bf16";
    const CUBLAS_TYPE: cudarc::cublas::sys::cudaDataType =
        cudarc::cublas::sys::cudaDataType::CUDA_R_16BF;
    fn alloc(dev: &CudaDevice, len: usize) -> Result<CudaSlice<u16>> {
        dev.alloc_u16(len)
    }
}

/// An op's fresh output buffer in the format it was written in.
pub enum CudaBuffer {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<u16>),
}

impl CudaBuffer {
    /// The values as f32 (bf16 widened, exactly).
    pub fn into_f32(self, dev: &CudaDevice) -> Result<CudaSlice<f32>> {
        match self {
            CudaBuffer::F32(s) => Ok(s),
            CudaBuffer::Bf16(b) => to_f32(dev, &b, b.len()),
        }
    }
}

impl<'a> Arg<'a> for &'a mut CudaBuffer {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        match *self {
            CudaBuffer::F32(s) => args.arg(s),
            CudaBuffer::Bf16(s) => args.arg(s),
        };
    }
}
impl<'a> DeviceBuffer<'a> for &'a mut CudaBuffer {
    fn elements(&self) -> usize {
        match &**self {
            CudaBuffer::F32(s) => s.len(),
            CudaBuffer::Bf16(s) => s.len(),
        }
    }
}
impl<'a> WritableBuffer<'a> for &'a mut CudaBuffer {}

/// `x` as it is when it is f32 or `keep` holds, else its bf16 bits widened into `wide` (an op
/// whose kernel for this case reads f32).
pub fn widened_unless<'a>(
    dev: &CudaDevice,
    x: CudaValues<'a>,
    keep: bool,
    wide: &'a mut Option<CudaSlice<f32>>,
) -> Result<CudaValues<'a>> {
    match x {
        CudaValues::Bf16(bits) if !keep => {
            Ok(CudaValues::F32(wide.insert(to_f32(dev, bits, bits.len())?)))
        }
        other => Ok(other),
    }
}

/// Whether ops that can keep bf16 activations should: the device is in bf16 product mode, and
/// the environment variable `SSOD_CUDA_BF16_STORAGE` is not `0` (read once; `0` keeps every
/// activation f32 with bf16 products, for A/B benchmarks of the storage).
pub fn stores_bf16(dev: &CudaDevice) -> bool {
    static STORAGE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled = *STORAGE
        .get_or_init(|| std::env::var("SSOD_CUDA_BF16_STORAGE").map_or(true, |v| v.trim() != "0"));
    enabled && dev.matrix_precision() == MatrixPrecision::Bf16
}

/// The first `len` values of `x` rounded to bf16 (`f32_to_bf16`, round to nearest even), as raw
/// u16 bits.
pub fn to_bf16<X: DevicePtr<f32>>(dev: &CudaDevice, x: &X, len: usize) -> Result<CudaSlice<u16>> {
    convert(dev, "f32_to_bf16", x, len, |dev, len| dev.alloc_u16(len))
}

/// The first `len` bf16 values of `x` as f32 (exact).
pub fn to_f32<X: DevicePtr<u16>>(dev: &CudaDevice, x: &X, len: usize) -> Result<CudaSlice<f32>> {
    convert(dev, "bf16_to_f32", x, len, |dev, len| dev.alloc(len))
}

fn convert<T, U, X: DevicePtr<T>>(
    dev: &CudaDevice,
    sym: &str,
    x: &X,
    len: usize,
    alloc: impl FnOnce(&CudaDevice, usize) -> Result<CudaSlice<U>>,
) -> Result<CudaSlice<U>>
where
    U: cudarc::driver::DeviceRepr,
{
    let n = to_i64(sym, len)?;
    let mut y = alloc(dev, len)?;
    if len == 0 {
        return Ok(y);
    }
    let (x_ptr, _read) = x.device_ptr(dev.stream());
    Kernel::new(dev, KernelFile::Elementwise, sym)
        .reads_address("x", &x_ptr, x.len(), len)
        .writes("y", &mut y, len)
        .value(&n)
        .launch(grid_1d(len))?;
    Ok(y)
}

/// `a + b` of two bf16 buffers of one shape, rounded to bf16 (the sum in f32): YOLOX's residual
/// adds in bf16 storage mode.
pub fn add(dev: &CudaDevice, a: &CudaSlice<u16>, b: &CudaSlice<u16>) -> Result<CudaSlice<u16>> {
    let sym = "add_bf16";
    let n = a.len();
    super::check_len(sym, "b (same shape as a)", b, n)?;
    let mut y = dev.alloc_u16(n)?;
    if n == 0 {
        return Ok(y);
    }
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, sym)
        .reads("a", a, n)
        .reads("b", b, n)
        .writes("y", &mut y, n)
        .value(&n64)
        .launch(grid_1d(n))?;
    Ok(y)
}

/// `x` rounded to bf16 on the host, as `bf16_bits` of kernels/bf16.cuh on the GPU: round to
/// nearest even; NaN stays a quiet NaN with its sign; overflow goes to infinity.
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if b & 0x7fff_ffff > 0x7f80_0000 {
        return ((b >> 16) | 0x0040) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

#[cfg(test)]
mod host_rounding_tests {
    use super::bf16_bits;

    #[test]
    fn host_bf16_rounds_to_nearest_even_like_the_kernel() {
        assert_eq!(bf16_bits(1.0), 0x3f80);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        // Ties: 1 + 2^-8 sits halfway between 1 and 1 + 2^-7 and goes to the even 1;
        // 1 + 3·2^-8 halfway between 1 + 2^-7 and 1 + 2^-6 goes to the even 1 + 2^-6.
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Just above a tie rounds up.
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(bf16_bits(f32::INFINITY), 0x7f80);
        assert_eq!(bf16_bits(f32::from_bits(0xff80_0001)), 0xffc0);
        assert_eq!(bf16_bits(0.0), 0);
        assert_eq!(bf16_bits(-0.0), 0x8000);
    }
}
