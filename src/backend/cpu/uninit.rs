//! Output buffers that kernels write without zeroing them first.
//!
//! A fresh `vec![0.0; n]` costs a memset (or, for a fresh mapping, the kernel's page clearing) of
//! every byte, which the kernels then overwrite: on YOLOX's large maps that is a measurable share
//! of a conv or batch-norm pass (BENCHMARKS.md, "Outputs written without zeroing"). Kernels that
//! write every element take `&mut [MaybeUninit<f32>]` instead and the buffer is handed out only
//! once written.

use std::mem::MaybeUninit;

/// A `Vec` of `len` floats filled by `write`, and what `write` returned.
///
/// # Safety
/// `write` must write every element of the slice it is given (the `Vec` is then assumed
/// initialised).
pub unsafe fn filled_vec<R>(
    len: usize,
    write: impl FnOnce(&mut [MaybeUninit<f32>]) -> R,
) -> (Vec<f32>, R) {
    let mut v = Vec::with_capacity(len);
    let result = write(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's contract: `write` wrote all `len` elements.
    unsafe { v.set_len(len) };
    (v, result)
}

/// Writes zeros into every element; the slice is then initialised and returned as floats.
pub fn zero_fill(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for v in s.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every element was just written; MaybeUninit<f32> has f32's layout.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Initialised floats seen as a write-only output slice.
///
/// # Safety
/// Whoever writes through the result must write only initialised values (never
/// `MaybeUninit::uninit()`), so that the floats stay initialised.
pub unsafe fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the caller keeps every element initialised.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}
