//! Forward + backward GFLOP/s of the CPU conv2d on YOLOX-S layer shapes (640×640, batch 8), next to
//! the machine's sgemm peak from the same `gemm` crate; depthwise convs (YOLOX-nano, 416×416,
//! batch 8) in GB/s.
//!
//! `cargo bench --bench conv2d` (reps per kernel: `CONV_BENCH_REPS`, default 3; best time kept,
//! since the machine is shared; `CONV_BENCH_FILTER=dark2` runs the layers whose name contains it).

use ssod::backend::conv_geometry::Conv2dGeometry;
use ssod::backend::cpu::conv2d::{self, conv_path};
use ssod::backend::cpu::gemm::{self, sgemm, MatRef};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn best_of<T>(reps: usize, mut f: impl FnMut() -> T) -> Duration {
    black_box(f()); // warm-up: thread-local buffers, page faults of the first allocation
    (0..reps)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

fn sgemm_peak(reps: usize) {
    let n = 1024;
    let a = values(n * n, 1);
    let b = values(n * n, 2);
    let mut c = vec![0f32; n * n];
    let flop = 2.0 * (n * n * n) as f64;
    for threads in [1, rayon::current_num_threads()] {
        let t = best_of(reps.max(5), || {
            sgemm(
                n,
                n,
                n,
                MatRef::row_major(&a, n),
                MatRef::row_major(&b, n),
                &mut c,
                n,
                false,
                threads,
            );
        });
        println!(
            "sgemm 1024^3, gemm-threads {threads}: {:.1} GFLOP/s",
            flop / t.as_secs_f64() / 1e9
        );
    }
    // The schedule the conv uses on a batch: one single-threaded gemm per rayon thread at once.
    println!(
        "sgemm 1024^3, {} concurrent single-threaded gemms: {:.1} GFLOP/s (the peak the targets refer to)",
        rayon::current_num_threads(),
        gemm::concurrent_peak_gflops(n, reps.max(5))
    );
}

#[allow(clippy::too_many_arguments)]
fn geom(
    n: usize,
    c: usize,
    hw: usize,
    k: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: n,
        in_channels: c,
        in_h: hw,
        in_w: hw,
        out_channels: k,
        kernel_h: kernel,
        kernel_w: kernel,
        stride,
        padding: (kernel - 1) / 2,
        groups,
    }
}

struct Timings {
    fwd: Duration,
    bwd_input: Duration,
    bwd_weight: Duration,
    /// fwd + bwd_input + bwd_weight through the `_into` forms on buffers reused between calls.
    reused: Duration,
}

fn time_conv(g: &Conv2dGeometry, reps: usize) -> Timings {
    let x = values(g.x_len(), 3);
    let w = values(g.w_len(), 4);
    let dy = values(g.y_len(), 5);
    let (mut y, mut dx, mut dw) = (
        vec![0f32; g.y_len()],
        vec![0f32; g.x_len()],
        vec![0f32; g.w_len()],
    );
    Timings {
        fwd: best_of(reps, || conv2d::fwd(&x, &w, g)),
        bwd_input: best_of(reps, || conv2d::bwd_input(&dy, &w, g)),
        bwd_weight: best_of(reps, || conv2d::bwd_weight(&dy, &x, g)),
        reused: best_of(reps, || {
            conv2d::fwd_into(&x, &w, g, &mut y);
            conv2d::bwd_input_into(&dy, &w, g, &mut dx);
            conv2d::bwd_weight_into(&dy, &x, g, &mut dw);
        }),
    }
}

fn main() {
    // The allocator the `ssod` binary runs with: outputs come from recycled heap memory, not
    // freshly mapped (page-faulting) pages.
    ssod::backend::cpu::tune_allocator();
    let reps: usize = std::env::var("CONV_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // Substring of the layer names to run (all when unset).
    let filter = std::env::var("CONV_BENCH_FILTER").unwrap_or_default();
    println!(
        "rayon threads: {}, reps: {reps} (best kept)",
        rayon::current_num_threads()
    );
    sgemm_peak(reps);

    let b = 8;
    let dense = [
        (
            "stem conv (Focus) 12->32 3x3 @320",
            geom(b, 12, 320, 32, 3, 1, 1),
        ),
        (
            "dark2 down 32->64 3x3 s2 @320",
            geom(b, 32, 320, 64, 3, 2, 1),
        ),
        ("dark2 CSP 1x1 64->32 @160", geom(b, 64, 160, 32, 1, 1, 1)),
        (
            "dark2 bottleneck 3x3 32->32 @160",
            geom(b, 32, 160, 32, 3, 1, 1),
        ),
        (
            "dark3 down 64->128 3x3 s2 @160",
            geom(b, 64, 160, 128, 3, 2, 1),
        ),
        ("dark3 CSP 1x1 128->64 @80", geom(b, 128, 80, 64, 1, 1, 1)),
        (
            "dark3 bottleneck 3x3 64->64 @80",
            geom(b, 64, 80, 64, 3, 1, 1),
        ),
        (
            "dark4 down 128->256 3x3 s2 @80",
            geom(b, 128, 80, 256, 3, 2, 1),
        ),
        ("dark4 CSP 1x1 256->128 @40", geom(b, 256, 40, 128, 1, 1, 1)),
        (
            "dark4 bottleneck 3x3 128->128 @40",
            geom(b, 128, 40, 128, 3, 1, 1),
        ),
        (
            "dark5 down 256->512 3x3 s2 @40",
            geom(b, 256, 40, 512, 3, 2, 1),
        ),
        (
            "dark5 SPP conv2 1x1 1024->512 @20",
            geom(b, 1024, 20, 512, 1, 1, 1),
        ),
        ("dark5 CSP 1x1 512->256 @20", geom(b, 512, 20, 256, 1, 1, 1)),
        (
            "dark5 bottleneck 3x3 256->256 @20",
            geom(b, 256, 20, 256, 3, 1, 1),
        ),
        ("head 3x3 128->128 @80", geom(b, 128, 80, 128, 3, 1, 1)),
    ];
    println!("\nYOLOX-S @640, batch 8: GFLOP/s (2 flop per MAC; each of fwd, bwd_input, bwd_weight = 1 forward's flops)");
    println!("'reused': the _into forms on recycled buffers; 'peak': concurrent sgemm measured just before the layer");
    println!("| layer | path | GFLOP fwd | fwd | bwd_input | bwd_weight | fwd+bwd | fwd+bwd reused | peak | fwd+bwd / peak | ms fwd+bwd |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (name, g) in dense.iter().filter(|(name, _)| name.contains(&filter)) {
        // Measured next to the layer so that the ratio compares like with like on a shared machine.
        let peak = gemm::concurrent_peak_gflops(1024, 2);
        let t = time_conv(g, reps);
        let flop = 2.0 * g.macs() as f64;
        let rate = |d: Duration| flop / d.as_secs_f64() / 1e9;
        let total = t.fwd + t.bwd_input + t.bwd_weight;
        let combined = 3.0 * flop / total.as_secs_f64() / 1e9;
        println!(
            "| {name} | {:?} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% | {:.0} |",
            conv_path(g),
            flop / 1e9,
            rate(t.fwd),
            rate(t.bwd_input),
            rate(t.bwd_weight),
            combined,
            3.0 * flop / t.reused.as_secs_f64() / 1e9,
            peak,
            100.0 * combined / peak,
            total.as_secs_f64() * 1e3
        );
    }

    let depthwise = [
        (
            "nano dark2 down dw 16 3x3 s2 @208",
            geom(b, 16, 208, 16, 3, 2, 16),
        ),
        (
            "nano dark2 bottleneck dw 16 3x3 @104",
            geom(b, 16, 104, 16, 3, 1, 16),
        ),
        (
            "nano dark3 down dw 32 3x3 s2 @104",
            geom(b, 32, 104, 32, 3, 2, 32),
        ),
        (
            "nano dark3 bottleneck dw 32 3x3 @52",
            geom(b, 32, 52, 32, 3, 1, 32),
        ),
        (
            "nano dark4 down dw 64 3x3 s2 @52",
            geom(b, 64, 52, 64, 3, 2, 64),
        ),
        ("nano head dw 64 3x3 @52", geom(b, 64, 52, 64, 3, 1, 64)),
        (
            "nano dark5 down dw 128 3x3 s2 @26",
            geom(b, 128, 26, 128, 3, 2, 128),
        ),
    ];
    println!("\nYOLOX-nano depthwise @416, batch 8: GB/s counting one read of each input and one write of each output");
    println!(
        "| layer | fwd GB/s | bwd_input GB/s | bwd_weight GB/s | fwd+bwd GFLOP/s | fwd+bwd GB/s reused | ms fwd+bwd |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, g) in depthwise.iter().filter(|(name, _)| name.contains(&filter)) {
        let t = time_conv(g, reps.max(5));
        let bytes = 4.0 * (g.x_len() + g.y_len()) as f64; // fwd: x in, y out; bwd_input: dy in, dx out; bwd_weight: dy, x in
        let gbs = |d: Duration| bytes / d.as_secs_f64() / 1e9;
        let total = t.fwd + t.bwd_input + t.bwd_weight;
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            gbs(t.fwd),
            gbs(t.bwd_input),
            gbs(t.bwd_weight),
            6.0 * g.macs() as f64 / total.as_secs_f64() / 1e9,
            3.0 * bytes / t.reused.as_secs_f64() / 1e9,
            total.as_secs_f64() * 1e3
        );
    }
}
