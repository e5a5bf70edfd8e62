//! CPU kernels: `gemm` crate for matrix products, rayon across batch items, plain loops elsewhere.
//! One file per op family; each exports `fwd` / `bwd_*` functions on slices.

pub mod batch_norm;
pub mod conv2d;
pub mod crop;
pub mod elementwise;
pub mod gemm;
pub mod index;
pub mod loss;
pub mod math;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod simd;
pub mod similarity;
pub mod softmax;
pub mod strided;
pub mod uninit;

/// Keep freed tensor buffers in the heap instead of returning them to the kernel: glibc maps
/// large blocks (>= 128 KiB .. 32 MiB) with mmap and unmaps them on free, so every op output
/// paid page faults and zeroing. Measured in BENCHMARKS.md ("training step"). Blocks over
/// 32 MiB (YOLOX-S at 640 px / batch 8 has many: 105 MB for a 32-channel map at 320²) would
/// still be mapped fresh, so the main thread's arena never uses mmap at all (worker threads'
/// arenas still fall back to it for blocks larger than their 64 MiB heaps). Call it at start-up,
/// before other threads exist: the `ssod` binary and the conv benchmark do.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before other threads.
    unsafe {
        // 32 MiB is glibc's ceiling for the mmap threshold (larger values are refused).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
