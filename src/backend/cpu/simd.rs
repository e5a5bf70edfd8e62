//! Wider vectors for the CPU's elementwise loops, chosen at run time.
//!
//! The crate builds for baseline x86-64 (SSE2, 4 f32 lanes) so one binary runs on any x86-64
//! machine (the GPU machines get binaries built here). Loops such as BN + SiLU then run at a
//! quarter of an AVX-512 core's width: on the benchmark VM (Zen 4) the fused BN + SiLU of a
//! YOLOX-S training step took 880 ms of a 5 s step at baseline and ~510 ms built for the CPU.
//! `simd_fn!` compiles one body three times (AVX-512, AVX2 + FMA, baseline) and picks the
//! widest the CPU supports on each call.
//!
//! Results do not depend on the level: Rust never contracts `a * b + c` into an FMA, so the
//! wide builds do the same IEEE operations in the same order; loops that reduce keep their
//! explicit lane arrays (see `batch_norm.rs`). `tests` below and the BN tests check it bitwise.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction-set level a `simd_fn!` body is compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimdLevel {
    Baseline = 1,
    Avx2 = 2,
    Avx512 = 3,
}

/// 0: not forced (use the CPU's best); otherwise a [`SimdLevel`] as u8.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The widest level this CPU runs, lowered by the environment variable `SSOD_CPU_SIMD`
/// (`baseline`, `avx2` or `avx512`; read once) for A/B benchmarks of the wide code paths.
pub fn detected_level() -> SimdLevel {
    static DETECTED: OnceLock<SimdLevel> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        let cpu = cpu_level();
        match std::env::var("SSOD_CPU_SIMD").as_deref() {
            Ok("baseline") => SimdLevel::Baseline,
            Ok("avx2") if cpu != SimdLevel::Baseline => SimdLevel::Avx2,
            _ => cpu,
        }
    })
}

/// The widest level the CPU supports (CPUID).
fn cpu_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Baseline
}

/// The level `simd_fn!` bodies run at: the detected one unless [`force_level`] lowered it.
#[inline]
pub fn level() -> SimdLevel {
    let best = detected_level();
    match FORCED.load(Ordering::Relaxed) {
        1 => SimdLevel::Baseline,
        2 if best != SimdLevel::Baseline => SimdLevel::Avx2,
        _ => best,
    }
}

/// Run every later `simd_fn!` call at `level` (capped at what the CPU has), or at the best
/// level again with `None`. Process-wide: for tests that compare levels and for benchmarks.
pub fn force_level(level: Option<SimdLevel>) {
    FORCED.store(level.map_or(0, |l| l as u8), Ordering::Relaxed);
}

/// `simd_fn! { pub fn name(a: &[f32], b: f32) -> T { body } }` defines `name` with the body
/// compiled for AVX-512, for AVX2 + FMA and for the baseline, dispatching on [`level`] per
/// call (one relaxed atomic load and a cached CPUID test: call it per plane or per row, not per
/// element). Helpers the body calls are widened only if they are `#[inline(always)]`.
/// No generic parameters: the body must be one concrete function.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::backend::cpu::simd::level() {
                    // SAFETY: `level` reports these only when CPUID says the CPU has them.
                    $crate::backend::cpu::simd::SimdLevel::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::backend::cpu::simd::SimdLevel::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::backend::cpu::simd::SimdLevel::Baseline => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

#[cfg(test)]
mod tests {
    use super::*;

    simd_fn! {
        /// A loop with a division, a select and an f64 lane reduction, like the BN kernels.
        fn sample_kernel(xs: &[f32], out: &mut [f32]) -> f64 {
            let mut lanes = [0f64; 8];
            for (i, (o, &x)) in out.iter_mut().zip(xs).enumerate() {
                let v = if x > 0.0 { x / (1.0 + x * x) } else { x * 0.5 + 1.0 };
                *o = v;
                lanes[i % 8] += v as f64 * x as f64;
            }
            lanes.iter().sum()
        }
    }

    #[test]
    fn every_level_gives_the_same_bits() {
        let xs: Vec<f32> = (0..1003)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let mut results = Vec::new();
        for l in [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512] {
            force_level(Some(l));
            let mut out = vec![0f32; xs.len()];
            let s = sample_kernel(&xs, &mut out);
            results.push((
                level(),
                s.to_bits(),
                out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            ));
        }
        force_level(None);
        assert_eq!(results[0].0, SimdLevel::Baseline);
        for r in &results[1..] {
            assert_eq!(
                (r.1, &r.2),
                (results[0].1, &results[0].2),
                "level {:?}",
                r.0
            );
        }
    }
}
