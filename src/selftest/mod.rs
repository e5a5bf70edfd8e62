//! `ssod selftest`: the parity table of the CUDA kernels (docs/cuda.md). Each case draws fresh seeded
//! random inputs (odd sizes), runs the GPU launcher and the CPU reference (the `backend::cpu`
//! functions, or the ops through `Tensor` + autograd for backward passes), and compares every
//! output element.
//!
//! Error measure, per element: `|gpu − cpu| / max(|cpu|, 0.01·max|cpu|)`: values under 1% of the
//! output's largest magnitude are judged against that 1% (their error comes from the summation
//! order of terms as large as the big outputs, not from their own size). A case passes when every
//! output's largest error is under its tolerance: 1e-4 for f32 unless the case says why not.
//!
//! It sits above every layer (its references are ops, models, detect and pretraining steps): a
//! test harness living in the library so that the binary can run it on a GPU machine. The
//! comparisons and the timer it shares with the backend are in `backend::cuda::measure`.

mod cases;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use crate::backend::cuda::CudaDevice;
use crate::Result;

pub use crate::backend::cuda::measure::{compare, compare_norm, failure_detail, timed, Diff};
pub use cases::cases;

/// One output of a case, from both sides.
pub struct Outputs {
    /// `(name, values)` per output, in the same order on both sides.
    pub values: Vec<(&'static str, Vec<f32>)>,
    /// Milliseconds of the computation alone (inputs prepared, results not yet copied back; on
    /// the GPU the second run, after a warm-up that compiled the kernels).
    pub ms: f64,
}

/// Host inputs of a case (each case knows the meaning and shape of each vector).
pub type Inputs = Vec<Vec<f32>>;

type MakeFn = Box<dyn Fn(&mut rand_chacha::ChaCha8Rng) -> Inputs>;
type CpuFn = Box<dyn Fn(&Inputs) -> Result<Outputs>>;
type GpuFn = Box<dyn Fn(&CudaDevice, &Inputs) -> Result<Outputs>>;

/// A row of the parity table.
pub struct Case {
    /// What runs, e.g. "conv2d im2col+sgemm 3x3 s2 p1".
    pub name: &'static str,
    /// The kernel symbols it exercises (the coverage test reads these).
    pub kernels: &'static [&'static str],
    /// Shapes, for the table.
    pub shape: String,
    /// Largest accepted error (see the module doc); a looser one says why where it is set.
    pub tol: f64,
    /// How an output's error is measured.
    pub measure: Measure,
    pub make: MakeFn,
    pub cpu: CpuFn,
    pub gpu: GpuFn,
}

/// Every kernel symbol some case exercises.
pub fn covered_symbols() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = cases()
        .iter()
        .flat_map(|c| c.kernels.iter().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// How a case's outputs are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Measure {
    /// Every element (the module doc's measure): for kernels, where each output element is one
    /// computation.
    PerElement,
    /// `‖gpu − cpu‖ / ‖cpu‖` over the whole output (METHOD's measure for f32 work): for a whole
    /// network, where a few ill-conditioned elements (BN over a handful of values at stride 32)
    /// magnify harmless rounding while a wrong kernel moves the whole norm.
    RelativeNorm,
}

/// Time a CPU computation.
pub fn timed_cpu<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let out = f()?;
    Ok((out, t.elapsed().as_secs_f64() * 1e3))
}

/// One line of the printed table.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: &'static str,
    pub output: &'static str,
    pub shape: String,
    pub diff: Option<Diff>,
    pub tol: f64,
    pub cpu_ms: f64,
    pub gpu_ms: Option<f64>,
    pub error: Option<String>,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.diff.as_ref().is_none_or(|d| d.first_bad.is_none())
    }
}

fn header() -> String {
    format!(
        "{:<40} {:<10} {:<36} {:>10} {:>10} {:>8} {:>9} {:>9}  {}",
        "kernel case",
        "output",
        "shape",
        "max abs",
        "max rel",
        "1st bad",
        "CPU ms",
        "GPU ms",
        "result"
    )
}

fn line(r: &Row) -> String {
    let (abs, rel, bad) = match &r.diff {
        Some(d) => (
            format!("{:.2e}", d.max_abs),
            format!("{:.2e}", d.max_rel),
            d.first_bad.map_or("-".to_string(), |i| i.to_string()),
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let gpu = r.gpu_ms.map_or("-".to_string(), |m| format!("{m:.3}"));
    let verdict = match (&r.error, r.passed()) {
        (Some(e), _) => format!("ERROR {e}"),
        (None, true) => "ok".into(),
        (None, false) => format!("FAIL (tol {:.0e})", r.tol),
    };
    format!(
        "{:<40} {:<10} {:<36} {:>10} {:>10} {:>8} {:>9.3} {:>9}  {}",
        r.case, r.output, r.shape, abs, rel, bad, r.cpu_ms, gpu, verdict
    )
}

/// Run the parity table on the GPU, printing one line per output; `Ok(rows)` whatever the
/// outcome (callers check [`Row::passed`]).
pub fn run_cuda(dev: &CudaDevice, seed: u64, mut print: impl FnMut(&str)) -> Vec<Row> {
    print(&format!(
        "device: {} ({}), seed {seed}",
        dev.name(),
        dev.arch()
    ));
    print(&header());
    let mut rows = Vec::new();
    for case in cases() {
        let mut rng = crate::rng::rng_for(seed, case.name);
        let inputs = (case.make)(&mut rng);
        let cpu = (case.cpu)(&inputs);
        // Twice: the first run compiles and loads the modules (NVRTC), the second is timed. Each
        // run uploads fresh inputs, so the second sees exactly what the first did. A panic (a
        // bug, or cudarc on a broken library) becomes this row's error, not the end of the table.
        let gpu = catch_unwind(AssertUnwindSafe(|| {
            (case.gpu)(dev, &inputs).and_then(|_| (case.gpu)(dev, &inputs))
        }))
        .unwrap_or_else(|_| Err(crate::Error::Cuda(format!("{} panicked", case.name))));
        match (cpu, gpu) {
            (Ok(c), Ok(g)) => {
                for ((name, cv), (_, gv)) in c.values.iter().zip(&g.values) {
                    let row = Row {
                        case: case.name,
                        output: name,
                        shape: case.shape.clone(),
                        diff: Some(match case.measure {
                            Measure::PerElement => compare(cv, gv, case.tol),
                            Measure::RelativeNorm => compare_norm(cv, gv, case.tol),
                        }),
                        tol: case.tol,
                        cpu_ms: c.ms,
                        gpu_ms: Some(g.ms),
                        error: (c.values.len() != g.values.len())
                            .then(|| "the two sides gave different outputs".to_string()),
                    };
                    print(&line(&row));
                    if !row.passed() && row.error.is_none() {
                        print(&format!("    {}", failure_detail(cv, gv, case.tol)));
                    }
                    rows.push(row);
                }
            }
            (c, g) => {
                let err = c
                    .err()
                    .or(g.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let row = Row {
                    case: case.name,
                    output: "-",
                    shape: case.shape.clone(),
                    diff: None,
                    tol: case.tol,
                    cpu_ms: 0.0,
                    gpu_ms: None,
                    error: Some(err.lines().next().unwrap_or("").to_string()),
                };
                print(&line(&row));
                rows.push(row);
            }
        }
    }
    rows
}

/// Run only the CPU side of every case (no GPU): each reference must run and give finite
/// outputs. Timings show what the GPU is compared with.
pub fn run_cpu(seed: u64, mut print: impl FnMut(&str)) -> Vec<Row> {
    print(&format!(
        "device: cpu (references of the CUDA parity table), seed {seed}"
    ));
    print(&header());
    let mut rows = Vec::new();
    for case in cases() {
        let mut rng = crate::rng::rng_for(seed, case.name);
        let inputs = (case.make)(&mut rng);
        let row = match (case.cpu)(&inputs) {
            Ok(c) => {
                let bad = c.values.iter().find(|(_, v)| v.iter().any(|x| x.is_nan()));
                Row {
                    case: case.name,
                    output: "all",
                    shape: case.shape.clone(),
                    diff: None,
                    tol: case.tol,
                    cpu_ms: c.ms,
                    gpu_ms: None,
                    error: bad.map(|(n, _)| format!("NaN in output `{n}`")),
                }
            }
            Err(e) => Row {
                case: case.name,
                output: "-",
                shape: case.shape.clone(),
                diff: None,
                tol: case.tol,
                cpu_ms: 0.0,
                gpu_ms: None,
                error: Some(e.to_string()),
            },
        };
        print(&line(&row));
        rows.push(row);
    }
    rows
}
