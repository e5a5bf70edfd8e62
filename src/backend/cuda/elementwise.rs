//! Launchers of `kernels/elementwise.cu`: unary forward/backward pairs and binary arithmetic
//! (same shape, or NumPy broadcasting through strides). CPU twins: `src/ops/elementwise.rs`,
//! `src/ops/binary.rs`.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::structs::cuda_struct;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// A unary op with its scalars.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Silu,
    Sigmoid,
    Relu,
    Exp,
    Log,
    Sqrt,
    Abs,
    Clamp { min: f32, max: f32 },
    Pow(f32),
}

impl Unary {
    pub fn stem(self) -> &'static str {
        match self {
            Unary::Silu => "silu",
            Unary::Sigmoid => "sigmoid",
            Unary::Relu => "relu",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Abs => "abs",
            Unary::Clamp { .. } => "clamp",
            Unary::Pow(_) => "pow",
        }
    }
    fn params(self) -> (f32, f32) {
        match self {
            Unary::Clamp { min, max } => (min, max),
            Unary::Pow(p) => (p, 0.0),
            _ => (0.0, 0.0),
        }
    }
    /// Whether the backward kernel takes the forward OUTPUT (else the input), as
    /// `src/ops/elementwise.rs` saves it.
    pub fn saves_output(self) -> bool {
        matches!(self, Unary::Sigmoid | Unary::Exp | Unary::Sqrt)
    }
    fn check(self) -> Result<()> {
        if let Unary::Clamp { min, max } = self {
            if min.is_nan() || max.is_nan() || min > max {
                return Err(Error::op(
                    "clamp",
                    format!("bad bounds min={min} max={max}"),
                ));
            }
        }
        Ok(())
    }
}

/// `y = f(x)`.
pub fn unary_fwd(dev: &CudaDevice, op: Unary, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
    op.check()?;
    let sym = format!("{}_fwd_f32", op.stem());
    let n = x.len();
    let mut y = dev.zeros(n)?;
    if n == 0 {
        return Ok(y);
    }
    let (p0, p1) = op.params();
    let n64 = to_i64(&sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, &sym)
        .reads("x", x, n)
        .writes("y", &mut y, n)
        .value(&n64)
        .value(&p0)
        .value(&p1)
        .launch(grid_1d(n))?;
    Ok(y)
}

/// `dx = dy · f'(saved)`, `saved` being the forward input or output (see [`Unary::saves_output`]).
pub fn unary_bwd(
    dev: &CudaDevice,
    op: Unary,
    dy: &CudaSlice<f32>,
    saved: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    op.check()?;
    let sym = format!("{}_bwd_f32", op.stem());
    let n = dy.len();
    check_len(&sym, "saved", saved, n)?;
    let mut dx = dev.zeros(n)?;
    if n == 0 {
        return Ok(dx);
    }
    let (p0, p1) = op.params();
    let n64 = to_i64(&sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, &sym)
        .reads("dy", dy, n)
        .reads("saved", saved, n)
        .writes("dx", &mut dx, n)
        .value(&n64)
        .value(&p0)
        .value(&p1)
        .launch(grid_1d(n))?;
    Ok(dx)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    pub fn stem(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }
}

/// `y = a ∘ b`, same length.
pub fn binary(
    dev: &CudaDevice,
    op: Binary,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
) -> Result<CudaSlice<f32>> {
    let sym = format!("{}_f32", op.stem());
    let n = a.len();
    check_len(&sym, "b (same shape as a)", b, n)?;
    // Every element is written: no zeroing pass.
    let mut y = dev.alloc(n)?;
    if n == 0 {
        return Ok(y);
    }
    let n64 = to_i64(&sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, &sym)
        .reads("a", a, n)
        .reads("b", b, n)
        .writes("y", &mut y, n)
        .value(&n64)
        .launch(grid_1d(n))?;
    Ok(y)
}

/// Most dims a broadcast kernel takes.
pub const MAX_RANK: usize = 6;

/// Mirrors `struct Bcast` of elementwise.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bcast {
    rank: i32,
    pad_: i32,
    dims: [i64; MAX_RANK],
    sa: [i64; MAX_RANK],
    sb: [i64; MAX_RANK],
}
cuda_struct!(Bcast mirrors "Bcast" in KernelFile::Elementwise, size 152, align 8, {
    rank @ 0, pad_ @ 4, dims @ 8, sa @ 56, sb @ 104,
});

/// NumPy broadcast of two shapes, or an error naming both.
pub fn broadcast_dims(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(op, a, b));
        };
    }
    Ok(out)
}

/// Strides (in elements) reading a contiguous `dims` tensor as `target` (0 on broadcast axes).
fn bcast_strides(dims: &[usize], target: &[usize]) -> Vec<i64> {
    let off = target.len() - dims.len();
    let mut contiguous = vec![0i64; dims.len()];
    let mut s = 1i64;
    for i in (0..dims.len()).rev() {
        contiguous[i] = s;
        s = s.saturating_mul(dims[i] as i64);
    }
    (0..target.len())
        .map(|i| {
            if i < off || (dims[i - off] == 1 && target[i] != 1) {
                0
            } else {
                contiguous[i - off]
            }
        })
        .collect()
}

/// `y = a ∘ b` with broadcasting: `a` is a contiguous `a_dims` tensor, `b` a contiguous
/// `b_dims` one. Returns `y` and its dims.
pub fn binary_bcast(
    dev: &CudaDevice,
    op: Binary,
    a: &CudaSlice<f32>,
    a_dims: &[usize],
    b: &CudaSlice<f32>,
    b_dims: &[usize],
) -> Result<(CudaSlice<f32>, Vec<usize>)> {
    let sym = format!("{}_bcast_f32", op.stem());
    check_len(&sym, "a", a, a_dims.iter().product())?;
    check_len(&sym, "b", b, b_dims.iter().product())?;
    let out = broadcast_dims(&sym, a_dims, b_dims)?;
    if out.len() > MAX_RANK {
        return Err(Error::op(&sym, format!("rank {} > {MAX_RANK}", out.len())));
    }
    let n: usize = out.iter().product();
    let mut y = dev.zeros(n)?;
    if n == 0 {
        return Ok((y, out));
    }
    let mut g = Bcast {
        rank: out.len() as i32,
        ..Default::default()
    };
    let (sa, sb) = (bcast_strides(a_dims, &out), bcast_strides(b_dims, &out));
    for i in 0..out.len() {
        g.dims[i] = to_i64(&sym, out[i])?;
        g.sa[i] = sa[i];
        g.sb[i] = sb[i];
    }
    let n64 = to_i64(&sym, n)?;
    // The strides index a and b within their lengths for every output index.
    Kernel::new(dev, KernelFile::Elementwise, &sym)
        .reads("a", a, a_dims.iter().product())
        .reads("b", b, b_dims.iter().product())
        .writes("y", &mut y, n)
        .value(&n64)
        .value(&g)
        .launch(grid_1d(n))?;
    Ok((y, out))
}

/// Same-shape quotient rule: `(g / b, −g·a/b²)`.
pub fn div_bwd(
    dev: &CudaDevice,
    g: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let sym = "div_bwd_f32";
    let n = g.len();
    check_len(sym, "a", a, n)?;
    check_len(sym, "b", b, n)?;
    let (mut ga, mut gb) = (dev.zeros(n)?, dev.zeros(n)?);
    if n == 0 {
        return Ok((ga, gb));
    }
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, sym)
        .reads("g", g, n)
        .reads("a", a, n)
        .reads("b", b, n)
        .writes("ga", &mut ga, n)
        .writes("gb", &mut gb, n)
        .value(&n64)
        .launch(grid_1d(n))?;
    Ok((ga, gb))
}

/// `y = a·x + b` (the scalar forms of arithmetic, `neg`, and their backward `g·a`).
pub fn scale_shift(dev: &CudaDevice, x: &CudaSlice<f32>, a: f32, b: f32) -> Result<CudaSlice<f32>> {
    let sym = "scale_shift_f32";
    let n = x.len();
    let mut y = dev.alloc(n)?;
    if n == 0 {
        return Ok(y);
    }
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, sym)
        .reads("x", x, n)
        .writes("y", &mut y, n)
        .value(&n64)
        .value(&a)
        .value(&b)
        .launch(grid_1d(n))?;
    Ok(y)
}

/// A fresh buffer of `n` copies of `v`.
pub fn fill(dev: &CudaDevice, n: usize, v: f32) -> Result<CudaSlice<f32>> {
    let sym = "fill_f32";
    let mut y = dev.alloc(n)?;
    if n == 0 {
        return Ok(y);
    }
    let n64 = to_i64(sym, n)?;
    Kernel::new(dev, KernelFile::Elementwise, sym)
        .writes("y", &mut y, n)
        .value(&n64)
        .value(&v)
        .launch(grid_1d(n))?;
    Ok(y)
}
