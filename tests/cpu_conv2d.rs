//! Fast CPU conv2d (im2col + gemm, pointwise, depthwise) against the plain reference loops, on odd
//! shapes, plus thread-count determinism and path selection.
//!
//! `cargo test --release --test cpu_conv2d`

use ssod::backend::conv_geometry::Conv2dGeometry;
use ssod::backend::cpu::conv2d::{self, conv_path, reference, ConvPath};
use ssod::backend::cpu::simd::{force_level, SimdLevel};
use std::sync::Mutex;

/// Held by tests that force the SIMD level (process-wide) and by tests whose bitwise comparisons
/// would break if the level, and with it a conv path, changed half-way.
static LEVEL_LOCK: Mutex<()> = Mutex::new(());

/// Deterministic values in [-1, 1) (xorshift; no dependency on an RNG crate's stream).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Max |fast - ref| relative to max |ref|, checked against a tolerance derived from the reduction
/// length: f32 summation error grows about linearly with the number of terms in the worst case, so
/// `4·ε·terms` (inputs in [-1,1]); it must also stay under the project-wide 1e-4.
fn check(what: &str, g: &Conv2dGeometry, fast: &[f32], reference: &[f32], terms: usize) {
    assert_eq!(fast.len(), reference.len(), "{what} {g:?}: length");
    let tol = (4.0 * f32::EPSILON * terms as f32).min(1e-4);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let (mut worst, mut at) = (0f32, 0);
    for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
        // A NaN in the fast result counts as an infinite error.
        let err = if a.is_nan() {
            f32::INFINITY
        } else {
            (a - b).abs() / scale
        };
        if err > worst {
            worst = err;
            at = i;
        }
    }
    assert!(
        worst < tol,
        "{what} {g:?}: rel err {worst:e} at {at} (fast {} ref {}) > tol {tol:e}",
        fast[at],
        reference[at]
    );
}

fn check_all(g: &Conv2dGeometry) {
    let x = values(g.x_len(), 1);
    let w = values(g.w_len(), 2);
    let dy = values(g.y_len(), 3);
    let (cin_g, cout_g) = (g.in_channels / g.groups, g.out_channels / g.groups);
    let taps = g.kernel_h * g.kernel_w;
    check(
        "fwd",
        g,
        &conv2d::fwd(&x, &w, g),
        &reference::fwd(&x, &w, g),
        cin_g * taps,
    );
    check(
        "bwd_input",
        g,
        &conv2d::bwd_input(&dy, &w, g),
        &reference::bwd_input(&dy, &w, g),
        cout_g * taps,
    );
    check(
        "bwd_weight",
        g,
        &conv2d::bwd_weight(&dy, &x, g),
        &reference::bwd_weight(&dy, &x, g),
        g.batch * g.out_h() * g.out_w(),
    );
}

/// The weight gradient's schedules (gemm_path/weight_grad.rs): the items packed into one product
/// when `taps·cout_g ≥ 1.1·P·(taps + cout_g)` (in chunks of 2,048 positions for large batches),
/// one product per item otherwise; against the reference, on plain, strided, grouped and
/// pointwise shapes, with planes down to 1×1.
#[test]
fn packed_and_per_item_weight_gradients_match_the_reference() {
    for g in [
        // Packed: 1×1 and 2×3 planes with many channels, a strided grouped 3×3, pointwise over
        // 64 channels (64 and fewer take the AVX-512 kernel where there is one) at 12×12.
        Conv2dGeometry::square([5, 96, 1, 1], 80, (1, 1, 0, 1)),
        Conv2dGeometry::square([3, 40, 2, 3], 24, (3, 1, 1, 1)),
        Conv2dGeometry::square([4, 32, 5, 5], 64, (3, 2, 1, 2)),
        Conv2dGeometry::square([2, 400, 12, 12], 400, (1, 1, 0, 1)),
        // Packed in chunks: 3 chunks of 128, 128 and 4 items of 4×4.
        Conv2dGeometry::square([260, 6, 4, 4], 40, (3, 1, 1, 1)),
        // Per item: few channels for the plane (8×8 and 8×9), im2col and pointwise on larger maps.
        Conv2dGeometry::square([3, 70, 8, 8], 66, (1, 1, 0, 1)),
        Conv2dGeometry::square([3, 70, 8, 9], 66, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 5, 48, 45], 6, (3, 1, 1, 1)),
        Conv2dGeometry::square([3, 8, 40, 40], 12, (1, 1, 0, 1)),
    ] {
        check_all(&g);
    }
}

/// Odd shapes over every path: batch 1 and 3, 5×7, 9×6 and 17×13 maps, kernels 1/3/5/6, stride 1/2,
/// padding 0/1/2, groups 1, 2 and = channels, channel counts that are not SIMD multiples.
#[test]
fn fast_matches_reference_on_odd_shapes() {
    let mut cases = 0;
    for &batch in &[1, 3] {
        // Packed and per-item weight gradients both occur (few channels: mostly per item).
        for &(h, w) in &[(5, 7), (9, 6), (17, 13)] {
            for &kernel in &[1, 3, 5] {
                for &stride in &[1, 2] {
                    for &pad in &[0, 1, 2] {
                        if h + 2 * pad < kernel || w + 2 * pad < kernel {
                            continue;
                        }
                        for &(c, k, groups) in &[(3, 5, 1), (6, 10, 2), (7, 7, 7), (13, 17, 1)] {
                            check_all(&Conv2dGeometry::square(
                                [batch, c, h, w],
                                k,
                                (kernel, stride, pad, groups),
                            ));
                            cases += 1;
                        }
                    }
                }
            }
        }
    }
    // 6×6 kernels (even size, asymmetric reach) and a depthwise 5×5 stride 2.
    check_all(&Conv2dGeometry::square([2, 5, 9, 8], 3, (6, 1, 2, 1)));
    check_all(&Conv2dGeometry::square([1, 4, 9, 7], 4, (6, 2, 1, 4)));
    check_all(&Conv2dGeometry::square([3, 9, 11, 10], 9, (5, 2, 2, 9)));
    // Pointwise with a group count and a wider map, and a larger dense 3×3.
    check_all(&Conv2dGeometry::square([3, 12, 10, 11], 18, (1, 1, 0, 3)));
    check_all(&Conv2dGeometry::square([2, 33, 17, 15], 35, (3, 1, 1, 1)));
    assert!(cases > 200, "only {cases} cases ran");
}

/// Shapes whose column matrix is built in several row tiles (taps·Ho·Wo well above the 256K-float
/// tile target, with a partial last tile), including stride 2 and groups.
#[test]
fn fast_matches_reference_across_im2col_tiles() {
    check_all(&Conv2dGeometry::square([2, 32, 50, 47], 20, (3, 1, 1, 1)));
    check_all(&Conv2dGeometry::square([1, 40, 97, 61], 8, (3, 2, 1, 2)));
    check_all(&Conv2dGeometry::square([1, 16, 41, 90], 12, (5, 1, 2, 1)));
}

/// Pointwise `bwd_weight` runs in chunks of 2048 positions: maps of 2491 and 4096+ positions
/// (a partial last chunk, an exact multiple plus one), with groups and batch 3.
#[test]
fn pointwise_matches_reference_across_weight_tiles() {
    check_all(&Conv2dGeometry::square([2, 6, 53, 47], 10, (1, 1, 0, 2)));
    check_all(&Conv2dGeometry::square([3, 5, 64, 64], 7, (1, 1, 0, 1)));
    check_all(&Conv2dGeometry::square([1, 9, 4097, 1], 4, (1, 1, 0, 1)));
}

/// The per-item `bwd_weight` transposes `dy` tiles only up to 32 output channels per group: both
/// sides of that threshold, pointwise and 3×3, one grouped.
#[test]
fn bwd_weight_both_sides_of_the_dy_transpose() {
    check_all(&Conv2dGeometry::square([2, 8, 11, 9], 32, (3, 1, 1, 1)));
    check_all(&Conv2dGeometry::square([2, 8, 11, 9], 40, (3, 2, 1, 1)));
    check_all(&Conv2dGeometry::square([1, 6, 50, 47], 36, (1, 1, 0, 1)));
    check_all(&Conv2dGeometry::square([2, 12, 9, 10], 66, (3, 1, 1, 2)));
}

/// Outputs of 8 MiB and more are allocated with a huge-page hint: same results as small ones
/// (pointwise and 3×3; `x` and `y` both over the threshold).
#[test]
fn large_outputs_match_reference() {
    check_all(&Conv2dGeometry::square([1, 2, 1024, 1024], 2, (1, 1, 0, 1)));
    check_all(&Conv2dGeometry::square([1, 2, 1030, 1030], 2, (3, 1, 1, 1)));
}

/// A fast path that claims a shape class must take it (no silent fallback to another path).
#[test]
fn shape_classes_take_their_paths() {
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 8, (3, 1, 1, 8))),
        ConvPath::Depthwise
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 8, (3, 2, 1, 8))),
        ConvPath::Depthwise
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 16, (1, 1, 0, 1))),
        ConvPath::Pointwise
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 16, (1, 1, 0, 2))),
        ConvPath::Pointwise
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 16, (1, 2, 0, 1))),
        ConvPath::Im2col
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 16, (3, 1, 1, 1))),
        ConvPath::Im2col
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 8, 9, 9], 16, (3, 1, 1, 8))),
        ConvPath::Im2col,
        "channel multiplier 2 is grouped, not depthwise"
    );
    assert_eq!(
        conv_path(&Conv2dGeometry::square([2, 1, 9, 9], 1, (3, 1, 1, 1))),
        ConvPath::Im2col,
        "groups = 1 is dense even with one channel"
    );
}

/// The fast paths really differ from the reference loops: a deliberately wrong weight must be caught.
#[test]
fn check_can_fail() {
    let g = Conv2dGeometry::square([1, 3, 5, 7], 5, (3, 1, 1, 1));
    let x = values(g.x_len(), 1);
    let mut w = values(g.w_len(), 2);
    let expected = reference::fwd(&x, &w, &g);
    w[4] += 0.01;
    let wrong = conv2d::fwd(&x, &w, &g);
    let result = std::panic::catch_unwind(|| check("fwd", &g, &wrong, &expected, 27));
    assert!(result.is_err(), "a perturbed weight passed the check");
}

fn run_in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
        .install(f)
}

/// Bitwise equal results with 1 and 3 rayon threads. Batch 1 and 2 take the "batch smaller than the
/// pool" schedule (threaded gemm) with 3 threads and the per-item schedule with 1; batch 4 takes
/// the per-item one in both; shapes are large enough that the gemm crate actually threads.
#[test]
fn results_do_not_depend_on_thread_count() {
    let _level = LEVEL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let shapes = [
        // Pointwise with few channels, batch 1: the AVX-512 weight gradient (single-threaded)
        // with 3 threads against 1.
        Conv2dGeometry::square([1, 24, 70, 65], 20, (1, 1, 0, 1)),
        Conv2dGeometry::square([1, 32, 24, 26], 48, (3, 1, 1, 1)),
        Conv2dGeometry::square([2, 32, 24, 26], 48, (3, 2, 1, 1)),
        Conv2dGeometry::square([4, 24, 20, 18], 40, (3, 1, 1, 2)),
        Conv2dGeometry::square([2, 64, 20, 20], 96, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 24, 50, 47], 20, (1, 1, 0, 1)),
        Conv2dGeometry::square([3, 32, 21, 19], 32, (3, 1, 1, 32)),
        Conv2dGeometry::square([1, 16, 30, 30], 16, (5, 2, 2, 16)),
        Conv2dGeometry::square([2, 32, 50, 47], 20, (3, 1, 1, 1)),
        // Small planes: the packed weight gradient (one product on the whole pool, or chunks
        // in parallel: 140 items of 4×4 are two chunks).
        Conv2dGeometry::square([5, 96, 1, 1], 80, (1, 1, 0, 1)),
        Conv2dGeometry::square([140, 8, 4, 4], 48, (3, 1, 1, 1)),
        Conv2dGeometry::square([4, 96, 3, 3], 80, (3, 2, 1, 2)),
    ];
    for g in &shapes {
        let x = values(g.x_len(), 11);
        let w = values(g.w_len(), 12);
        let dy = values(g.y_len(), 13);
        let run = |threads| {
            run_in_pool(threads, || {
                (
                    conv2d::fwd(&x, &w, g),
                    conv2d::bwd_input(&dy, &w, g),
                    conv2d::bwd_weight(&dy, &x, g),
                )
            })
        };
        let one = run(1);
        let three = run(3);
        let bits = |v: &Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&one.0) == bits(&three.0),
            "fwd differs between 1 and 3 threads: {g:?}"
        );
        assert!(
            bits(&one.1) == bits(&three.1),
            "bwd_input differs between 1 and 3 threads: {g:?}"
        );
        assert!(
            bits(&one.2) == bits(&three.2),
            "bwd_weight differs between 1 and 3 threads: {g:?}"
        );
        // And they are right.
        check(
            "fwd",
            g,
            &one.0,
            &reference::fwd(&x, &w, g),
            g.in_channels / g.groups * g.kernel_h * g.kernel_w,
        );
    }
}

#[test]
fn bias_add_adds_per_channel() {
    let mut y = vec![1.0f32; 2 * 3 * 4];
    conv2d::bias_add(&mut y, &[10.0, 20.0, 30.0], 4);
    let expected: Vec<f32> = [11.0, 21.0, 31.0, 11.0, 21.0, 31.0]
        .iter()
        .flat_map(|&v| [v; 4])
        .collect();
    assert_eq!(y, expected);
}

/// The `_into` forms overwrite whatever the buffer held (NaN here) and match the allocating forms
/// bitwise, on every path.
#[test]
fn into_forms_overwrite_dirty_buffers() {
    for g in [
        Conv2dGeometry::square([3, 6, 9, 6], 10, (3, 2, 1, 2)),
        Conv2dGeometry::square([2, 12, 7, 5], 18, (1, 1, 0, 3)),
        Conv2dGeometry::square([3, 7, 9, 6], 7, (3, 1, 1, 7)),
        Conv2dGeometry::square([1, 32, 50, 47], 20, (3, 1, 1, 1)),
    ] {
        let x = values(g.x_len(), 21);
        let w = values(g.w_len(), 22);
        let dy = values(g.y_len(), 23);
        let (mut y, mut dx, mut dw) = (
            vec![f32::NAN; g.y_len()],
            vec![f32::NAN; g.x_len()],
            vec![f32::NAN; g.w_len()],
        );
        conv2d::fwd_into(&x, &w, &g, &mut y);
        conv2d::bwd_input_into(&dy, &w, &g, &mut dx);
        conv2d::bwd_weight_into(&dy, &x, &g, &mut dw);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&conv2d::fwd(&x, &w, &g)), "fwd_into {g:?}");
        assert_eq!(
            bits(&dx),
            bits(&conv2d::bwd_input(&dy, &w, &g)),
            "bwd_input_into {g:?}"
        );
        assert_eq!(
            bits(&dw),
            bits(&conv2d::bwd_weight(&dy, &x, &g)),
            "bwd_weight_into {g:?}"
        );
        check(
            "fwd_into",
            &g,
            &y,
            &reference::fwd(&x, &w, &g),
            g.in_channels / g.groups * 9,
        );
    }
}

/// 1×1 convolutions that take each pointwise weight-gradient path: lanes-wide and narrow
/// channel counts, planes smaller than a tile, grouped.
fn pointwise_shapes() -> Vec<Conv2dGeometry> {
    vec![
        Conv2dGeometry::square([3, 5, 7, 9], 13, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 64, 3, 5], 64, (1, 1, 0, 1)),
        Conv2dGeometry::square([1, 9, 1, 3], 25, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 32, 40, 40], 64, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 64, 33, 31], 32, (1, 1, 0, 1)),
        Conv2dGeometry::square([3, 12, 10, 11], 18, (1, 1, 0, 3)),
        Conv2dGeometry::square([1, 16, 80, 80], 8, (1, 1, 0, 1)),
    ]
}

/// The weight gradient of pointwise convs with at most 64 channels runs on an AVX-512 kernel
/// where the CPU has it and on its portable twin otherwise: every SIMD level against the
/// reference, on shapes that reach every tail of the kernel's tiles (output or input rows not a
/// multiple of 4, positions not a multiple of 16 or fewer than 16, several 512-position panels,
/// groups).
#[test]
fn pointwise_paths_at_every_simd_level() {
    let _level = LEVEL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    for level in [SimdLevel::Baseline, SimdLevel::Avx2, SimdLevel::Avx512] {
        force_level(Some(level));
        for g in &pointwise_shapes() {
            check_all(g);
        }
    }
    force_level(None);
}

/// Every path gives the same bits at every SIMD level: the pointwise weight gradient's portable
/// twin adds what the AVX-512 kernel adds in the same order, and the shapes alone choose the
/// paths (the pointwise shapes and some of `results_do_not_depend_on_thread_count`'s).
#[test]
fn results_do_not_depend_on_the_simd_level() {
    let _level = LEVEL_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let mut shapes = pointwise_shapes();
    shapes.extend([
        Conv2dGeometry::square([2, 64, 20, 20], 96, (1, 1, 0, 1)),
        Conv2dGeometry::square([2, 32, 24, 26], 48, (3, 2, 1, 1)),
        Conv2dGeometry::square([3, 32, 21, 19], 32, (3, 1, 1, 32)),
        Conv2dGeometry::square([140, 8, 4, 4], 48, (3, 1, 1, 1)),
    ]);
    let bits = |v: Vec<f32>| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for g in &shapes {
        let x = values(g.x_len(), 21);
        let w = values(g.w_len(), 22);
        let dy = values(g.y_len(), 23);
        let run = |level| {
            force_level(Some(level));
            let out = (
                bits(conv2d::fwd(&x, &w, g)),
                bits(conv2d::bwd_input(&dy, &w, g)),
                bits(conv2d::bwd_weight(&dy, &x, g)),
            );
            force_level(None);
            out
        };
        let widest = run(SimdLevel::Avx512);
        for level in [SimdLevel::Avx2, SimdLevel::Baseline] {
            let other = run(level);
            assert!(widest.0 == other.0, "fwd differs at {level:?}: {g:?}");
            assert!(widest.1 == other.1, "bwd_input differs at {level:?}: {g:?}");
            assert!(
                widest.2 == other.2,
                "bwd_weight differs at {level:?}: {g:?}"
            );
        }
    }
}
