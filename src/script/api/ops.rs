//! Engine ops in Rhai. Layer ops take an option map whose keys are checked
//! (`conv2d(x, w, #{ stride: 2, padding: 1, groups: 1 })`).

use rhai::{Array, Dynamic, Map, FLOAT, INT};

use super::Api;
use crate::ops::{self, BatchNormParams, Conv2dParams, Pool2dParams};
use crate::script::convert::{lift, script_err, to_ints, to_shape, Opts, ScriptResult};
use crate::tensor::Shape;
use crate::Tensor;

type R = ScriptResult<Tensor>;

fn conv_params(opts: &Map) -> ScriptResult<Conv2dParams> {
    let o = Opts::new("conv2d", opts, &["stride", "padding", "groups"])?;
    Ok(Conv2dParams {
        stride: o.usize("stride", 1)?,
        padding: o.usize("padding", 0)?,
        groups: o.usize("groups", 1)?,
    })
}

fn pool_params(op: &str, opts: &Map, default_stride_is_kernel: bool) -> ScriptResult<Pool2dParams> {
    let o = Opts::new(op, opts, &["kernel", "stride", "padding"])?;
    let kernel = o.usize("kernel", 2)?;
    let stride = o.usize("stride", if default_stride_is_kernel { kernel } else { 1 })?;
    Ok(Pool2dParams {
        kernel,
        stride,
        padding: o.usize("padding", 0)?,
    })
}

fn tensors(op: &str, arr: &Array) -> ScriptResult<Vec<Tensor>> {
    arr.iter()
        .enumerate()
        .map(|(i, d)| {
            d.clone()
                .try_cast::<Tensor>()
                .ok_or_else(|| script_err(format!("{op}: element {i} is not a Tensor")))
        })
        .collect()
}

fn axes(op: &str, arr: &Array) -> ScriptResult<Vec<isize>> {
    Ok(to_ints(op, arr)?.into_iter().map(|a| a as isize).collect())
}

fn index(op: &str, i: INT) -> ScriptResult<usize> {
    usize::try_from(i)
        .map_err(|_| script_err(format!("{op}: expected a non-negative integer, got {i}")))
}

pub fn register(api: &mut Api) {
    // ---- reductions ----
    func!(
        api,
        "sum",
        &["t: Tensor"],
        "Tensor",
        "Sum of all elements (shape []).",
        |t: &mut Tensor| -> R { lift(ops::sum_all(t)) }
    );
    func!(
        api,
        "mean",
        &["t: Tensor"],
        "Tensor",
        "Mean of all elements (shape []).",
        |t: &mut Tensor| -> R { lift(ops::mean_all(t)) }
    );
    func!(
        api,
        "sum",
        &["t: Tensor", "axes: Array", "keepdim: bool"],
        "Tensor",
        "Sum over the given axes.",
        |t: &mut Tensor, a: Array, k: bool| -> R { lift(ops::sum(t, &axes("sum", &a)?, k)) }
    );
    func!(
        api,
        "sum",
        &["t: Tensor", "axis: i64"],
        "Tensor",
        "Sum over one axis (removed).",
        |t: &mut Tensor, a: INT| -> R { lift(ops::sum(t, &[a as isize], false)) }
    );
    func!(
        api,
        "mean",
        &["t: Tensor", "axes: Array", "keepdim: bool"],
        "Tensor",
        "Mean over the given axes.",
        |t: &mut Tensor, a: Array, k: bool| -> R { lift(ops::mean(t, &axes("mean", &a)?, k)) }
    );
    func!(
        api,
        "mean",
        &["t: Tensor", "axis: i64"],
        "Tensor",
        "Mean over one axis (removed).",
        |t: &mut Tensor, a: INT| -> R { lift(ops::mean(t, &[a as isize], false)) }
    );
    func!(
        api,
        "max",
        &["t: Tensor", "axis: i64"],
        "Tensor",
        "Max over one axis (removed).",
        |t: &mut Tensor, a: INT| -> R { lift(ops::max_axis(t, a as isize, false)) }
    );
    func!(
        api,
        "max",
        &["t: Tensor", "axis: i64", "keepdim: bool"],
        "Tensor",
        "Max over one axis.",
        |t: &mut Tensor, a: INT, k: bool| -> R { lift(ops::max_axis(t, a as isize, k)) }
    );

    // ---- elementwise ----
    macro_rules! unary {
        ($name:literal, $f:path, $doc:literal) => {
            func!(
                api,
                $name,
                &["x: Tensor"],
                "Tensor",
                $doc,
                |x: &mut Tensor| -> R { lift($f(x)) }
            );
        };
    }
    unary!("silu", ops::silu, "SiLU: x·sigmoid(x).");
    unary!("sigmoid", ops::sigmoid, "Logistic sigmoid.");
    unary!("relu", ops::relu, "max(x, 0).");
    unary!("tanh", ops::tanh, "Hyperbolic tangent.");
    unary!("exp", ops::exp, "e^x.");
    unary!("log", ops::log, "Natural logarithm.");
    unary!("sqrt", ops::sqrt, "Square root.");
    unary!("abs", ops::abs, "|x|.");
    unary!("neg", ops::neg, "-x.");
    unary!(
        "contiguous",
        ops::contiguous,
        "A row-major copy (no copy when already contiguous)."
    );
    unary!(
        "upsample2x",
        ops::upsample_nearest2x,
        "Nearest ×2 upsampling of [N,C,H,W]."
    );
    unary!(
        "global_avg_pool2d",
        ops::global_avg_pool2d,
        "[N,C,H,W] -> [N,C,1,1] mean."
    );
    func!(
        api,
        "clamp",
        &["x: Tensor", "min: f64", "max: f64"],
        "Tensor",
        "Clamp into [min, max].",
        |x: &mut Tensor, lo: FLOAT, hi: FLOAT| -> R { lift(ops::clamp(x, lo as f32, hi as f32)) }
    );
    func!(
        api,
        "pow",
        &["x: Tensor", "p: f64"],
        "Tensor",
        "x^p for a number p.",
        |x: &mut Tensor, p: FLOAT| -> R { lift(ops::pow_scalar(x, p as f32)) }
    );
    func!(
        api,
        "pow",
        &["x: Tensor", "p: i64"],
        "Tensor",
        "x^p for an integer p.",
        |x: &mut Tensor, p: INT| -> R { lift(ops::pow_scalar(x, p as f32)) }
    );
    func!(
        api,
        "maximum",
        &["a: Tensor", "b: Tensor"],
        "Tensor",
        "Elementwise max (broadcasting).",
        |a: Tensor, b: Tensor| -> R { lift(ops::maximum(&a, &b)) }
    );
    func!(
        api,
        "minimum",
        &["a: Tensor", "b: Tensor"],
        "Tensor",
        "Elementwise min (broadcasting).",
        |a: Tensor, b: Tensor| -> R { lift(ops::minimum(&a, &b)) }
    );

    // ---- layers ----
    func!(
        api,
        "conv2d",
        &["x: Tensor", "w: Tensor", "opts: Map"],
        "Tensor",
        "2-D convolution; opts: stride, padding, groups.",
        |x: Tensor, w: Tensor, o: Map| -> R { lift(ops::conv2d(&x, &w, None, conv_params(&o)?)) }
    );
    func!(
        api,
        "conv2d",
        &["x: Tensor", "w: Tensor", "b: Tensor", "opts: Map"],
        "Tensor",
        "2-D convolution with bias; opts: stride, padding, groups.",
        |x: Tensor, w: Tensor, b: Tensor, o: Map| -> R {
            lift(ops::conv2d(&x, &w, Some(&b), conv_params(&o)?))
        }
    );
    func!(api,
        "batch_norm",
        &["x: Tensor", "gamma: Tensor", "beta: Tensor", "running_mean: Tensor", "running_var: Tensor", "opts: Map"],
        "Tensor",
        "Batch norm over [N,C,H,W]; opts: training (true), momentum (0.03), eps (0.001). Training updates the running stats in place.",
        |x: Tensor, g: Tensor, b: Tensor, rm: Tensor, rv: Tensor, o: Map| -> R {
            let opts = Opts::new("batch_norm", &o, &["training", "momentum", "eps"])?;
            let d = BatchNormParams::default();
            let p = BatchNormParams {
                training: opts.bool("training", d.training)?,
                momentum: opts.float("momentum", d.momentum as f64)? as f32,
                eps: opts.float("eps", d.eps as f64)? as f32,
            };
            lift(ops::batch_norm2d(&x, &g, &b, &rm, &rv, p))
        },
    );
    func!(
        api,
        "max_pool2d",
        &["x: Tensor", "opts: Map"],
        "Tensor",
        "Max pooling; opts: kernel (2), stride (1), padding (0).",
        |x: Tensor, o: Map| -> R {
            lift(ops::max_pool2d(&x, pool_params("max_pool2d", &o, false)?))
        }
    );
    func!(
        api,
        "avg_pool2d",
        &["x: Tensor", "opts: Map"],
        "Tensor",
        "Average pooling; opts: kernel (2), stride (= kernel), padding (0).",
        |x: Tensor, o: Map| -> R {
            lift(ops::avg_pool2d(&x, pool_params("avg_pool2d", &o, true)?))
        }
    );
    func!(
        api,
        "matmul",
        &["a: Tensor", "b: Tensor"],
        "Tensor",
        "Matrix product (2-D or batched).",
        |a: Tensor, b: Tensor| -> R { lift(ops::matmul(&a, &b)) }
    );
    func!(
        api,
        "linear",
        &["x: Tensor", "w: Tensor"],
        "Tensor",
        "x · wᵀ.",
        |x: Tensor, w: Tensor| -> R { lift(ops::linear(&x, &w, None)) }
    );
    func!(
        api,
        "linear",
        &["x: Tensor", "w: Tensor", "b: Tensor"],
        "Tensor",
        "x · wᵀ + b.",
        |x: Tensor, w: Tensor, b: Tensor| -> R { lift(ops::linear(&x, &w, Some(&b))) }
    );
    func!(
        api,
        "softmax",
        &["x: Tensor", "axis: i64"],
        "Tensor",
        "Softmax along an axis.",
        |x: Tensor, a: INT| -> R { lift(ops::softmax(&x, a as isize)) }
    );
    func!(
        api,
        "log_softmax",
        &["x: Tensor", "axis: i64"],
        "Tensor",
        "Log-softmax along an axis.",
        |x: Tensor, a: INT| -> R { lift(ops::log_softmax(&x, a as isize)) }
    );

    // ---- losses (per element; reduce with .sum() / .mean()) ----
    func!(
        api,
        "bce_with_logits",
        &["logits: Tensor", "target: Tensor"],
        "Tensor",
        "Binary cross-entropy on logits, per element.",
        |x: Tensor, t: Tensor| -> R { lift(ops::bce_with_logits(&x, &t, None)) }
    );
    func!(
        api,
        "bce_with_logits",
        &["logits: Tensor", "target: Tensor", "weight: Tensor"],
        "Tensor",
        "Weighted binary cross-entropy on logits, per element.",
        |x: Tensor, t: Tensor, w: Tensor| -> R { lift(ops::bce_with_logits(&x, &t, Some(&w))) }
    );
    func!(
        api,
        "cross_entropy",
        &["logits: Tensor", "labels: Tensor"],
        "Tensor",
        "Cross-entropy of [N,C] logits against class ids [N], one value per row.",
        |x: Tensor, l: Tensor| -> R { lift(ops::cross_entropy(&x, &l)) }
    );
    func!(
        api,
        "l1_loss",
        &["a: Tensor", "b: Tensor"],
        "Tensor",
        "|a - b| per element.",
        |a: Tensor, b: Tensor| -> R { lift(ops::l1_loss(&a, &b)) }
    );
    func!(
        api,
        "smooth_l1_loss",
        &["a: Tensor", "b: Tensor", "beta: f64"],
        "Tensor",
        "Smooth L1 per element.",
        |a: Tensor, b: Tensor, beta: FLOAT| -> R { lift(ops::smooth_l1_loss(&a, &b, beta as f32)) }
    );
    func!(
        api,
        "cosine_similarity",
        &["a: Tensor", "b: Tensor", "axis: i64"],
        "Tensor",
        "Cosine similarity along an axis (inputs broadcast).",
        |a: Tensor, b: Tensor, d: INT| -> R { lift(ops::cosine_similarity(&a, &b, d as isize)) }
    );

    // ---- shapes and indexing ----
    func!(
        api,
        "reshape",
        &["x: Tensor", "shape: Array"],
        "Tensor",
        "Same values, new shape (one -1 is inferred).",
        |x: &mut Tensor, s: Array| -> R {
            let shape: Shape = lift(ops::infer_shape(
                "reshape",
                &to_ints("reshape", &s)?,
                x.numel(),
            ))?;
            lift(ops::reshape(x, shape))
        }
    );
    func!(
        api,
        "permute",
        &["x: Tensor", "axes: Array"],
        "Tensor",
        "Reorder axes.",
        |x: &mut Tensor, a: Array| -> R {
            let a: Vec<usize> = to_shape("permute", &a)?;
            lift(ops::permute(x, &a))
        }
    );
    func!(
        api,
        "transpose",
        &["x: Tensor", "a: i64", "b: i64"],
        "Tensor",
        "Swap two axes.",
        |x: &mut Tensor, a: INT, b: INT| -> R { lift(ops::transpose(x, a as isize, b as isize)) }
    );
    func!(
        api,
        "narrow",
        &["x: Tensor", "axis: i64", "start: i64", "len: i64"],
        "Tensor",
        "len elements from start along axis (a view).",
        |x: &mut Tensor, a: INT, s: INT, l: INT| -> R {
            lift(ops::narrow(
                x,
                a as isize,
                index("narrow", s)?,
                index("narrow", l)?,
            ))
        }
    );
    func!(
        api,
        "slice",
        &[
            "x: Tensor",
            "axis: i64",
            "start: i64",
            "end: i64",
            "step: i64"
        ],
        "Tensor",
        "x[start:end:step] along axis (a view).",
        |x: &mut Tensor, a: INT, s: INT, e: INT, st: INT| -> R {
            lift(ops::slice_step(
                x,
                a as isize,
                index("slice", s)?,
                index("slice", e)?,
                index("slice", st)?,
            ))
        }
    );
    func!(
        api,
        "unsqueeze",
        &["x: Tensor", "axis: i64"],
        "Tensor",
        "Insert an axis of size 1.",
        |x: &mut Tensor, a: INT| -> R { lift(ops::unsqueeze(x, index("unsqueeze", a)?)) }
    );
    func!(
        api,
        "squeeze",
        &["x: Tensor", "axis: i64"],
        "Tensor",
        "Remove an axis of size 1.",
        |x: &mut Tensor, a: INT| -> R { lift(ops::squeeze(x, a as isize)) }
    );
    func!(
        api,
        "flatten",
        &["x: Tensor", "start: i64", "end: i64"],
        "Tensor",
        "Merge axes start..=end.",
        |x: &mut Tensor, s: INT, e: INT| -> R {
            let rank = x.rank() as INT;
            let norm = |a: INT| if a < 0 { a + rank } else { a };
            lift(ops::flatten(
                x,
                index("flatten", norm(s))?,
                index("flatten", norm(e))?,
            ))
        }
    );
    func!(
        api,
        "cat",
        &["xs: Array", "axis: i64"],
        "Tensor",
        "Concatenate tensors along an axis.",
        |xs: Array, a: INT| -> R { lift(ops::cat(&tensors("cat", &xs)?, a as isize)) }
    );
    func!(
        api,
        "split",
        &["x: Tensor", "sizes: Array", "axis: i64"],
        "Array",
        "Split along an axis into pieces of the given sizes.",
        |x: &mut Tensor, s: Array, a: INT| -> ScriptResult<Array> {
            let parts = lift(ops::split(x, &to_shape("split", &s)?, a as isize))?;
            Ok(parts.into_iter().map(Dynamic::from).collect())
        }
    );
    func!(
        api,
        "index_select",
        &["x: Tensor", "axis: i64", "indices: Tensor"],
        "Tensor",
        "Pick entries along an axis by 1-D integer indices.",
        |x: &mut Tensor, a: INT, i: Tensor| -> R { lift(ops::index_select(x, a as isize, &i)) }
    );
    func!(
        api,
        "gather",
        &["x: Tensor", "axis: i64", "index: Tensor"],
        "Tensor",
        "torch.gather along an axis.",
        |x: &mut Tensor, a: INT, i: Tensor| -> R { lift(ops::gather(x, a as isize, &i)) }
    );
}
