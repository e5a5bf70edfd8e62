//! Which algorithm runs a conv with one group: the device's [`ConvAlgorithm`]. `im2col` and
//! `implicit` are fixed; `auto` runs both at the first call of each conv (shape, pass,
//! precision, storage), checks that they agree, times them, and keeps the faster for the rest
//! of the process. That is cuDNN's benchmark mode (`torch.backends.cudnn.benchmark`, which
//! `benches/torch_yolox.py` turns on, as YOLOX's trainer does): per layer, the faster algorithm,
//! so `auto` is never slower than the better fixed choice by more than its first-call cost.
//!
//! The agreement check is what makes `auto` safe to leave on: an implicit-GEMM result that
//! differs from the im2col + cuBLAS one by more than its precision's rounding is never picked,
//! and the disagreement is reported (once per conv) instead of training on it. Grouped and
//! depthwise convs keep their own kernels (the im2col path's) whatever the setting.

use std::collections::HashMap;
use std::sync::Mutex;

use super::super::bf16::{CudaBuffer, CudaValues};
use super::super::context::{ConvAlgorithm, CudaDevice, MatrixPrecision};
use super::super::measure::{compare_norm, timed};
use super::implicit_gemm;
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::Result;

/// The three products of a conv, each chosen on its own (their best algorithms differ: the
/// weight gradient reduces over the batch, the others over channels and taps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    Forward,
    InputGrad,
    WeightGrad,
}

impl ConvPass {
    fn name(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::InputGrad => "input gradient",
            ConvPass::WeightGrad => "weight gradient",
        }
    }
}

/// Everything that picks different kernels: one `auto` measurement per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ChoiceKey {
    g: Conv2dGeometry,
    pass: ConvPass,
    precision: MatrixPrecision,
    x_bf16: bool,
    out_bf16: bool,
}

#[derive(Clone, Copy, Debug)]
struct Choice {
    algorithm: ConvAlgorithm,
    /// The implicit run failed or disagreed with the im2col one (so it was not timed).
    refused: bool,
}

/// The choices `auto` made in this process (a field of the device).
#[derive(Default)]
pub struct ConvChoices {
    made: Mutex<HashMap<ChoiceKey, Choice>>,
}

/// What `auto` chose so far: convs × passes per algorithm, and how many of them it refused the
/// implicit kernels (a failed run or a result that disagreed; those run im2col).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvChoiceSummary {
    pub im2col: usize,
    pub implicit: usize,
    pub refused: usize,
}

impl std::fmt::Display for ConvChoiceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "implicit for {} of {} conv passes",
            self.implicit,
            self.implicit + self.im2col
        )?;
        if self.refused > 0 {
            write!(f, " ({} refused: see the warnings)", self.refused)?;
        }
        Ok(())
    }
}

impl ConvChoices {
    fn get(&self, key: &ChoiceKey) -> Option<Choice> {
        self.lock().get(key).copied()
    }
    fn insert(&self, key: ChoiceKey, choice: Choice) {
        self.lock().insert(key, choice);
    }
    pub fn summary(&self) -> ConvChoiceSummary {
        let mut s = ConvChoiceSummary::default();
        for c in self.lock().values() {
            match c.algorithm {
                ConvAlgorithm::Implicit => s.implicit += 1,
                _ => s.im2col += 1,
            }
            s.refused += usize::from(c.refused);
        }
        s
    }
    /// Forget every choice (a benchmark that wants to measure `auto`'s first calls again).
    pub fn clear(&self) {
        self.lock().clear();
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChoiceKey, Choice>> {
        // The map is only read and inserted into: a panic elsewhere cannot leave it torn.
        self.made
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Timed runs per algorithm after the first (untimed: it loads kernels and grows the memory
/// pool, and gives the results the agreement check compares); the fastest run counts.
const TIMED_RUNS: usize = 2;

/// The algorithm that runs the `pass` of the conv `g` on `dev`: the fixed setting, or under
/// `auto` the remembered choice, measured with `run` (which runs the pass by the algorithm it
/// is given and returns the result) at the first call.
pub(super) fn algorithm_for(
    dev: &CudaDevice,
    g: &Conv2dGeometry,
    pass: ConvPass,
    (x, out_bf16): (CudaValues, bool),
    run: impl Fn(ConvAlgorithm) -> Result<CudaBuffer>,
) -> Result<ConvAlgorithm> {
    if g.groups != 1 {
        return Ok(ConvAlgorithm::Im2col);
    }
    match dev.conv_algorithm() {
        ConvAlgorithm::Auto if implicit_gemm::supported(dev) => {}
        ConvAlgorithm::Auto => return Ok(ConvAlgorithm::Im2col),
        fixed => return Ok(fixed),
    }
    let key = ChoiceKey {
        g: *g,
        pass,
        precision: dev.matrix_precision(),
        x_bf16: matches!(x, CudaValues::Bf16(_)),
        out_bf16,
    };
    if let Some(c) = dev.conv_choices().get(&key) {
        return Ok(c.algorithm);
    }
    let choice = measure(dev, &key, run)?;
    dev.conv_choices().insert(key, choice);
    Ok(choice.algorithm)
}

/// Run both algorithms, compare their results, and time them (interleaved, so a clock or
/// power state drifting during the measurement weighs on both).
fn measure(
    dev: &CudaDevice,
    key: &ChoiceKey,
    run: impl Fn(ConvAlgorithm) -> Result<CudaBuffer>,
) -> Result<Choice> {
    let reference = to_host(dev, run(ConvAlgorithm::Im2col)?)?;
    let bound = agreement_bound(key.precision);
    // A launch the implicit kernels refuse (resources of an unforeseen GPU) is reported the
    // same way: this conv keeps the path that works.
    let refusal = match run(ConvAlgorithm::Implicit).and_then(|b| to_host(dev, b)) {
        Err(e) => Some(format!("failed: {e}")),
        Ok(implicit) => {
            let diff = compare_norm(&reference, &implicit, bound);
            diff.first_bad.is_some().then(|| {
                format!(
                    "differs from im2col's by {:.2e} (relative norm, bound {bound:.0e})",
                    diff.max_rel
                )
            })
        }
    };
    if let Some(why) = refusal {
        eprintln!(
            "warning: conv auto: the implicit-GEMM {} of {:?} ({:?}) {why}; this conv keeps \
             im2col. Please report it with the table of `ssod selftest --device cuda`.",
            key.pass.name(),
            key.g,
            key.precision,
        );
        return Ok(Choice {
            algorithm: ConvAlgorithm::Im2col,
            refused: true,
        });
    }
    let algorithm = fastest(TIMED_RUNS, |a| {
        timed(dev, || run(a).map(drop)).map(|(_, ms)| ms)
    })?;
    Ok(Choice {
        algorithm,
        refused: false,
    })
}

/// The faster of im2col and implicit by their best of `rounds` times (`ms` runs one and says
/// how long it took), im2col first in each round; a tie keeps im2col.
fn fastest(
    rounds: usize,
    mut ms: impl FnMut(ConvAlgorithm) -> Result<f64>,
) -> Result<ConvAlgorithm> {
    let (mut im2col, mut implicit) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        im2col = im2col.min(ms(ConvAlgorithm::Im2col)?);
        implicit = implicit.min(ms(ConvAlgorithm::Implicit)?);
    }
    Ok(if implicit < im2col {
        ConvAlgorithm::Implicit
    } else {
        ConvAlgorithm::Im2col
    })
}

/// How far the two algorithms' results may differ, by `‖implicit − im2col‖ / ‖im2col‖`: twice
/// the selftest's bound against the CPU for the precision (each result carries its own
/// rounding), far below what a wrong tile, tap or layout gives (order 1).
fn agreement_bound(p: MatrixPrecision) -> f64 {
    match p {
        MatrixPrecision::F32 => 2e-4,
        MatrixPrecision::Tf32 => 4e-3,
        MatrixPrecision::Bf16 => 2e-2,
    }
}

fn to_host(dev: &CudaDevice, b: CudaBuffer) -> Result<Vec<f32>> {
    dev.download(&b.into_f32(dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ms` answering from a script of (algorithm, time) pairs, checking the call order.
    fn scripted(script: &[(ConvAlgorithm, f64)]) -> impl FnMut(ConvAlgorithm) -> Result<f64> + '_ {
        let mut at = 0;
        move |a| {
            let (want, t) = script[at];
            assert_eq!(a, want, "call {at}");
            at += 1;
            Ok(t)
        }
    }

    #[test]
    fn conv_algorithm_names_round_trip_and_others_are_refused() {
        for a in [
            ConvAlgorithm::Im2col,
            ConvAlgorithm::Implicit,
            ConvAlgorithm::Auto,
        ] {
            assert_eq!(ConvAlgorithm::from_name(a.name()).unwrap(), a);
        }
        let err = ConvAlgorithm::from_name("cudnn").unwrap_err().to_string();
        assert!(
            err.contains("cudnn") && err.contains("implicit") && err.contains("auto"),
            "{err}"
        );
    }

    #[test]
    fn fastest_takes_the_best_round_of_each_and_ties_keep_im2col() {
        use ConvAlgorithm::{Im2col as C, Implicit as I};
        // Implicit's best (1.0) beats im2col's best (1.5) though it loses the first round.
        let s = [(C, 1.5), (I, 3.0), (C, 2.0), (I, 1.0)];
        assert_eq!(fastest(2, scripted(&s)).unwrap(), I);
        // Im2col's best (0.9) beats implicit's (1.0).
        let s = [(C, 0.9), (I, 1.0), (C, 4.0), (I, 1.2)];
        assert_eq!(fastest(2, scripted(&s)).unwrap(), C);
        assert_eq!(fastest(1, scripted(&[(C, 1.0), (I, 1.0)])).unwrap(), C);
    }

    #[test]
    fn fastest_passes_on_a_failed_run() {
        let mut calls = 0;
        let err = fastest(2, |a| {
            calls += 1;
            match a {
                ConvAlgorithm::Implicit => Err(crate::Error::op("conv2d", "launch failed")),
                _ => Ok(1.0),
            }
        })
        .unwrap_err();
        assert!(err.to_string().contains("launch failed"), "{err}");
        assert_eq!(calls, 2);
    }

    #[test]
    fn the_summary_counts_choices_by_algorithm() {
        let choices = ConvChoices::default();
        let g = Conv2dGeometry {
            batch: 2,
            in_channels: 3,
            in_h: 8,
            in_w: 8,
            out_channels: 4,
            kernel_h: 3,
            kernel_w: 3,
            stride: 1,
            padding: 1,
            groups: 1,
        };
        let key = |pass| ChoiceKey {
            g,
            pass,
            precision: MatrixPrecision::Bf16,
            x_bf16: true,
            out_bf16: true,
        };
        let pick = |algorithm, refused| Choice { algorithm, refused };
        choices.insert(key(ConvPass::Forward), pick(ConvAlgorithm::Implicit, false));
        choices.insert(key(ConvPass::InputGrad), pick(ConvAlgorithm::Im2col, true));
        choices.insert(
            key(ConvPass::WeightGrad),
            pick(ConvAlgorithm::Im2col, false),
        );
        // The same key again replaces, it does not count twice.
        choices.insert(key(ConvPass::Forward), pick(ConvAlgorithm::Implicit, false));
        let s = choices.summary();
        assert_eq!(
            s,
            ConvChoiceSummary {
                im2col: 2,
                implicit: 1,
                refused: 1
            }
        );
        assert_eq!(
            s.to_string(),
            "implicit for 1 of 3 conv passes (1 refused: see the warnings)"
        );
        assert_eq!(
            choices.get(&key(ConvPass::Forward)).unwrap().algorithm,
            ConvAlgorithm::Implicit
        );
        choices.clear();
        assert_eq!(choices.summary(), ConvChoiceSummary::default());
    }
}
