//! The one place kernels are launched: [`Kernel`] collects a kernel's arguments in the order of
//! its parameter list, checks every device buffer against the number of elements the caller
//! says the kernel may touch and the grid against the limits every CUDA GPU has, and only then
//! launches, naming the kernel in every error.
//!
//! Launchers build one [`Kernel`] per launch:
//!
//! ```ignore
//! Kernel::new(dev, KernelFile::Loss, "box_loss_fwd_bwd_f32")
//!     .reads("pred [n, 4]", pred, 4 * n)
//!     .writes("loss [n]", &mut loss, n)
//!     .value(&n64)
//!     .launch(grid_1d(n))?;
//! ```
//!
//! The declared lengths are the launcher's statement of how far the kernel's indexing reaches
//! (from the geometry the kernel receives); [`Kernel::launch`] refuses a buffer shorter than
//! that. A buffer the kernel does not touch for these arguments (a stand-in for an absent
//! optional input) is declared with 0 elements.

use cudarc::driver::PushKernelArg;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchArgs, LaunchConfig};

use super::context::{cuda_err, CudaDevice};
use super::modules::KernelFile;
use crate::{Error, Result};

/// Most threads in one block (every GPU since compute capability 2.0; CUDA C++ Programming
/// Guide, "Technical Specifications per Compute Capability").
const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Most threads along a block's x and y (z allows 64).
const MAX_BLOCK_XY: u32 = 1024;
const MAX_BLOCK_Z: u32 = 64;
/// Most blocks along a grid's x (2^31 - 1), and along y and z.
const MAX_GRID_X: u32 = i32::MAX as u32;
const MAX_GRID_YZ: u32 = 65_535;
/// Dynamic shared memory a kernel may get without opting in per function (48 KiB).
const MAX_DYNAMIC_SHARED_BYTES: u32 = 48 * 1024;

/// One kernel argument, pushed onto cudarc's launch builder when the kernel launches.
pub(crate) trait Arg<'a> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x;
}

/// A device buffer (a whole [`CudaSlice`] or a view into one) as a kernel argument.
pub(crate) trait DeviceBuffer<'a>: Arg<'a> + 'a {
    /// Elements the buffer holds.
    fn elements(&self) -> usize;
}

/// A device buffer the kernel may write (held mutably for the launch).
pub(crate) trait WritableBuffer<'a>: DeviceBuffer<'a> {}

impl<'a, T> Arg<'a> for &'a CudaSlice<T> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        args.arg(*self);
    }
}
impl<'a, T> DeviceBuffer<'a> for &'a CudaSlice<T> {
    fn elements(&self) -> usize {
        self.len()
    }
}

impl<'a, T> Arg<'a> for &'a mut CudaSlice<T> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        args.arg(*self);
    }
}
impl<'a, T> DeviceBuffer<'a> for &'a mut CudaSlice<T> {
    fn elements(&self) -> usize {
        self.len()
    }
}
impl<'a, T> WritableBuffer<'a> for &'a mut CudaSlice<T> {}

impl<'a, 'c: 'a, T> Arg<'a> for &'a CudaView<'c, T> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        args.arg(*self);
    }
}
impl<'a, 'c: 'a, T> DeviceBuffer<'a> for &'a CudaView<'c, T> {
    fn elements(&self) -> usize {
        self.len()
    }
}

impl<'a, 'c: 'a, T> Arg<'a> for &'a mut CudaViewMut<'c, T> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        args.arg(*self);
    }
}
impl<'a, 'c: 'a, T> DeviceBuffer<'a> for &'a mut CudaViewMut<'c, T> {
    fn elements(&self) -> usize {
        self.len()
    }
}
impl<'a, 'c: 'a, T> WritableBuffer<'a> for &'a mut CudaViewMut<'c, T> {}

/// A value passed by copy (a scalar or a `repr(C)` struct mirroring the kernel's).
struct Value<'a, T>(&'a T);

impl<'a, T: DeviceRepr> Arg<'a> for Value<'a, T> {
    fn push_to<'x>(self: Box<Self>, args: &mut LaunchArgs<'x>)
    where
        'a: 'x,
    {
        args.arg(self.0);
    }
}

/// One launch of one kernel: its arguments, in the order of the kernel's parameters, each
/// buffer checked against the elements the kernel may touch.
#[must_use = "a kernel runs only once `launch` is called"]
pub(crate) struct Kernel<'a> {
    dev: &'a CudaDevice,
    file: KernelFile,
    name: &'a str,
    args: Vec<Box<dyn Arg<'a> + 'a>>,
    /// The first buffer found too short (reported by `launch`, which then launches nothing).
    short_buffer: Option<Error>,
}

impl<'a> Kernel<'a> {
    /// Kernel `name` of `file`, with no arguments yet.
    pub fn new(dev: &'a CudaDevice, file: KernelFile, name: &'a str) -> Kernel<'a> {
        Kernel {
            dev,
            file,
            name,
            args: Vec::with_capacity(8),
            short_buffer: None,
        }
    }

    /// A buffer the kernel reads, of which it touches at most the first `touched` elements.
    pub fn reads(self, what: &str, buf: impl DeviceBuffer<'a>, touched: usize) -> Kernel<'a> {
        self.buffer(what, buf, touched)
    }

    /// A buffer the kernel writes (and may read), of which it touches at most the first
    /// `touched` elements.
    pub fn writes(self, what: &str, buf: impl WritableBuffer<'a>, touched: usize) -> Kernel<'a> {
        self.buffer(what, buf, touched)
    }

    /// A value the kernel takes by copy: a scalar of the parameter's type (`long long` as
    /// `i64`, `int` as `i32`, `float` as `f32`) or a `repr(C)` mirror of its struct.
    pub fn value<T: DeviceRepr>(mut self, v: &'a T) -> Kernel<'a> {
        self.args.push(Box::new(Value(v)));
        self
    }

    /// Several values of one type, in order (`value` for each).
    pub fn values<T: DeviceRepr>(mut self, vs: &'a [T]) -> Kernel<'a> {
        for v in vs {
            self = self.value(v);
        }
        self
    }

    /// A buffer the kernel reads, passed as its raw device address `ptr` (for launchers generic
    /// over cudarc's `DevicePtr`), holding `held` elements of which the kernel touches at most
    /// the first `touched`.
    pub fn reads_address(
        mut self,
        what: &str,
        ptr: &'a u64,
        held: usize,
        touched: usize,
    ) -> Kernel<'a> {
        self.note_short(what, held, touched);
        self.args.push(Box::new(Value(ptr)));
        self
    }

    fn buffer(mut self, what: &str, buf: impl DeviceBuffer<'a>, touched: usize) -> Kernel<'a> {
        self.note_short(what, buf.elements(), touched);
        self.args.push(Box::new(buf));
        self
    }

    fn note_short(&mut self, what: &str, held: usize, touched: usize) {
        if held < touched && self.short_buffer.is_none() {
            self.short_buffer = Some(Error::ShapeMismatch {
                op: self.name.to_string(),
                expected: format!("{what} of at least {touched} elements"),
                got: format!("{held} elements"),
            });
        }
    }

    /// Launch with grid `cfg` on the device's stream (asynchronously: a fault inside the kernel
    /// surfaces at the next synchronisation).
    pub fn launch(self, cfg: LaunchConfig) -> Result<()> {
        if let Some(e) = self.short_buffer {
            return Err(e);
        }
        check_config(self.name, &cfg)?;
        let f = self.dev.function(self.file, self.name)?;
        let mut builder = self.dev.stream().launch_builder(&f);
        for arg in self.args {
            arg.push_to(&mut builder);
        }
        // SAFETY: what `LaunchArgs::launch` cannot check, and what this relies on:
        // - every argument pushed matches the kernel's parameter at its position: device
        //   buffers for pointers of the same element type, `i64`/`i32`/`f32` for
        //   `long long`/`int`/`float`, and `repr(C)` structs whose size and alignment are
        //   asserted against the CUDA struct where they are declared (the launchers follow the
        //   parameter lists of `kernels/*.cu`);
        // - the kernel touches no element of a buffer past the count its launcher declared
        //   (the declared counts follow from the geometry values passed alongside), and every
        //   buffer holds at least that many (checked above, or nothing launched);
        // - the buffers outlive the kernel: they are borrowed for the builder's lifetime, and
        //   a buffer dropped later is freed on this same stream (`cuMemFreeAsync`), after
        //   the kernel, since everything in this crate runs on the device's one stream;
        // - the grid and block are within the limits of every CUDA GPU (checked above).
        unsafe { builder.launch(cfg) }.map_err(|e| cuda_err(self.name, e))?;
        Ok(())
    }
}

/// Refuse an empty grid or block, or one past the limits of every CUDA GPU, before the driver
/// sees it.
fn check_config(kernel: &str, cfg: &LaunchConfig) -> Result<()> {
    let (gx, gy, gz) = cfg.grid_dim;
    let (bx, by, bz) = cfg.block_dim;
    let threads = bx as u64 * by as u64 * bz as u64;
    let problem = if [gx, gy, gz, bx, by, bz].contains(&0) {
        Some("an empty grid or block".to_string())
    } else if gx > MAX_GRID_X || gy > MAX_GRID_YZ || gz > MAX_GRID_YZ {
        Some(format!(
            "grid ({gx}, {gy}, {gz}) past ({MAX_GRID_X}, {MAX_GRID_YZ}, {MAX_GRID_YZ}) blocks"
        ))
    } else if bx > MAX_BLOCK_XY || by > MAX_BLOCK_XY || bz > MAX_BLOCK_Z {
        Some(format!(
            "block ({bx}, {by}, {bz}) past ({MAX_BLOCK_XY}, {MAX_BLOCK_XY}, {MAX_BLOCK_Z}) threads"
        ))
    } else if threads > MAX_THREADS_PER_BLOCK as u64 {
        Some(format!(
            "{threads} threads per block (at most {MAX_THREADS_PER_BLOCK})"
        ))
    } else if cfg.shared_mem_bytes > MAX_DYNAMIC_SHARED_BYTES {
        Some(format!(
            "{} bytes of dynamic shared memory (at most {MAX_DYNAMIC_SHARED_BYTES})",
            cfg.shared_mem_bytes
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Error::op(kernel, format!("launch refused: {p}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(grid_dim: (u32, u32, u32), block_dim: (u32, u32, u32), shared: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim,
            block_dim,
            shared_mem_bytes: shared,
        }
    }

    #[test]
    fn configs_within_the_limits_pass() {
        for c in [
            cfg((1, 1, 1), (1, 1, 1), 0),
            cfg((65_535, 1, 1), (256, 1, 1), 0),
            cfg((i32::MAX as u32, 65_535, 65_535), (1024, 1, 1), 48 * 1024),
            cfg((7, 3, 2), (32, 8, 4), 0),
        ] {
            assert!(check_config("k", &c).is_ok(), "{c:?}");
        }
    }

    #[test]
    fn configs_past_the_limits_are_refused_naming_the_kernel() {
        for c in [
            cfg((0, 1, 1), (256, 1, 1), 0),
            cfg((1, 1, 1), (256, 0, 1), 0),
            cfg((1 << 31, 1, 1), (256, 1, 1), 0),
            cfg((1, 65_536, 1), (256, 1, 1), 0),
            cfg((1, 1, 1), (1025, 1, 1), 0),
            cfg((1, 1, 1), (1, 1, 65), 0),
            cfg((1, 1, 1), (64, 32, 1), 0),
            cfg((1, 1, 1), (256, 1, 1), 48 * 1024 + 1),
        ] {
            let e = check_config("sum_partial_f32", &c).expect_err("refused");
            assert!(e.to_string().contains("sum_partial_f32"), "{e}");
        }
    }
}
