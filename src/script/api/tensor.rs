//! Tensors in Rhai: creation, properties, autograd, files, arithmetic operators.

use std::path::PathBuf;

use rhai::{Array, Dynamic, Map, NativeCallContext, FLOAT, INT};

use super::Api;
use crate::script::convert::{
    lift, nested_values, script_err, tensor_to_dynamic, to_shape, ScriptResult,
};
use crate::tensor::npy::{read_npy, write_npy};
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::{ops, Tensor};

type R = ScriptResult<Tensor>;

fn seed_of(seed: INT) -> ScriptResult<u64> {
    u64::try_from(seed).map_err(|_| script_err(format!("seed must be >= 0, got {seed}")))
}

/// Refuse to overwrite a file a user made, unless the script says so.
fn check_new_file(op: &str, path: &str, overwrite: bool) -> ScriptResult<PathBuf> {
    let p = PathBuf::from(path);
    if p.exists() && !overwrite {
        return Err(script_err(format!(
            "{op}: `{path}` already exists; pass `true` as the last argument to overwrite it"
        )));
    }
    Ok(p)
}

pub fn register(api: &mut Api) {
    api.engine.register_type_with_name::<Tensor>("Tensor");
    api.engine
        .register_fn("to_string", |t: &mut Tensor| format!("{t:?}"));
    api.engine
        .register_fn("to_debug", |t: &mut Tensor| format!("{t:?}"));

    // ---- creation ----
    func!(
        api,
        "tensor",
        &["values: Array", "shape: Array"],
        "Tensor",
        "A tensor from flat values and a shape.",
        |v: Array, s: Array| -> R {
            let (values, _) = nested_values("tensor", &v)?;
            lift(Tensor::from_vec(values, to_shape("tensor", &s)?))
        }
    );
    func!(
        api,
        "tensor",
        &["values: Array"],
        "Tensor",
        "A tensor from (nested) arrays of numbers; the nesting gives the shape.",
        |v: Array| -> R {
            let (values, shape) = nested_values("tensor", &v)?;
            lift(Tensor::from_vec(values, shape))
        }
    );
    func!(
        api,
        "zeros",
        &["shape: Array"],
        "Tensor",
        "A tensor of zeros.",
        |s: Array| -> R { lift(Tensor::full_checked("zeros", to_shape("zeros", &s)?, 0.0)) }
    );
    func!(
        api,
        "ones",
        &["shape: Array"],
        "Tensor",
        "A tensor of ones.",
        |s: Array| -> R { lift(Tensor::full_checked("ones", to_shape("ones", &s)?, 1.0)) }
    );
    func!(
        api,
        "full",
        &["shape: Array", "value: f64"],
        "Tensor",
        "A tensor filled with one value.",
        |s: Array, v: FLOAT| -> R {
            lift(Tensor::full_checked(
                "full",
                to_shape("full", &s)?,
                v as f32,
            ))
        }
    );
    func!(
        api,
        "randn",
        &["shape: Array", "seed: i64"],
        "Tensor",
        "Standard normal values, seeded.",
        |s: Array, seed: INT| -> R {
            lift(Tensor::try_randn(to_shape("randn", &s)?, seed_of(seed)?))
        }
    );
    func!(
        api,
        "rand",
        &["shape: Array", "seed: i64"],
        "Tensor",
        "Uniform values in [0, 1), seeded.",
        |s: Array, seed: INT| -> R {
            lift(Tensor::try_rand(to_shape("rand", &s)?, seed_of(seed)?))
        }
    );
    func!(
        api,
        "arange",
        &["start: f64", "end: f64", "step: f64"],
        "Tensor",
        "start, start+step, ... below end.",
        |a: FLOAT, b: FLOAT, s: FLOAT| -> R { lift(Tensor::arange(a as f32, b as f32, s as f32)) }
    );
    func!(
        api,
        "arange",
        &["end: i64"],
        "Tensor",
        "0, 1, ..., end-1.",
        |n: INT| -> R { lift(Tensor::arange(0.0, n as f32, 1.0)) }
    );

    // ---- properties ----
    api.engine.register_get("shape", |t: &mut Tensor| -> Array {
        t.dims()
            .iter()
            .map(|&d| Dynamic::from_int(d as INT))
            .collect()
    });
    api.engine
        .register_get("numel", |t: &mut Tensor| t.numel() as INT);
    api.engine
        .register_get("rank", |t: &mut Tensor| t.rank() as INT);
    func!(
        api,
        "item",
        &["t: Tensor"],
        "f64",
        "The value of a one-element tensor.",
        |t: &mut Tensor| -> ScriptResult<FLOAT> { Ok(lift(t.item())? as FLOAT) }
    );
    func!(
        api,
        "to_array",
        &["t: Tensor"],
        "Array",
        "The values as nested arrays (shape-shaped).",
        |t: &mut Tensor| tensor_to_dynamic(t)
    );
    func!(
        api,
        "to_flat_array",
        &["t: Tensor"],
        "Array",
        "The values as one flat array.",
        |t: &mut Tensor| -> Array {
            t.to_vec()
                .into_iter()
                .map(|v| Dynamic::from_float(v as FLOAT))
                .collect()
        }
    );

    // ---- autograd ----
    func!(
        api,
        "requires_grad",
        &["t: Tensor"],
        "Tensor",
        "Mark the tensor as a leaf that collects gradients; returns it.",
        |t: &mut Tensor| { t.clone().with_requires_grad(true) }
    );
    func!(
        api,
        "backward",
        &["t: Tensor"],
        "()",
        "Backpropagate from a one-element tensor into every leaf's .grad().",
        |t: &mut Tensor| -> ScriptResult<()> { lift(t.backward()) }
    );
    func!(
        api,
        "grad",
        &["t: Tensor"],
        "Tensor or ()",
        "The accumulated gradient of a leaf, or () when none reached it.",
        |t: &mut Tensor| -> Dynamic { t.grad().map(Dynamic::from).unwrap_or(Dynamic::UNIT) }
    );
    func!(
        api,
        "zero_grad",
        &["t: Tensor"],
        "()",
        "Forget the accumulated gradient.",
        |t: &mut Tensor| t.zero_grad()
    );
    func!(
        api,
        "detach",
        &["t: Tensor"],
        "Tensor",
        "The same values, cut from the graph.",
        |t: &mut Tensor| t.detach()
    );
    func!(
        api,
        "no_grad",
        &["f: Fn"],
        "Dynamic",
        "Call `f` without recording gradients; returns its result.",
        |ctx: NativeCallContext, f: rhai::FnPtr| -> ScriptResult<Dynamic> {
            let _guard = crate::autograd::no_grad_guard();
            f.call_within_context::<Dynamic>(&ctx, ())
        }
    );
    func!(
        api,
        "set_anomaly_mode",
        &["on: bool"],
        "()",
        "Check every op's output for NaN/Inf and fail naming the first op that made one.",
        |on: bool| { crate::autograd::set_anomaly_mode(on) }
    );
    func!(
        api,
        "sgd_step",
        &["params: Array", "lr: f64"],
        "()",
        "p -= lr * p.grad() for every tensor in params, in place; then zero their gradients.",
        |params: Array, lr: FLOAT| -> ScriptResult<()> {
            for (i, p) in params.iter().enumerate() {
                let t = p
                    .clone()
                    .try_cast::<Tensor>()
                    .ok_or_else(|| script_err(format!("sgd_step: params[{i}] is not a Tensor")))?;
                if let Some(g) = t.grad() {
                    let gv = g.to_vec();
                    lift(t.update_values(|v| {
                        v.iter_mut().zip(&gv).for_each(|(x, g)| *x -= lr as f32 * g)
                    }))?;
                    t.zero_grad();
                }
            }
            Ok(())
        }
    );

    // ---- files ----
    func!(
        api,
        "load_npy",
        &["path: String"],
        "Tensor",
        "Read a .npy file (f32, f64, i64, i32, u8, bool) as f32.",
        |p: &str| -> R { lift(read_npy(p.as_ref())) }
    );
    func!(
        api,
        "save_npy",
        &["t: Tensor", "path: String"],
        "()",
        "Write a .npy file (f32); refuses to overwrite an existing file.",
        |t: &mut Tensor, p: &str| -> ScriptResult<()> {
            let p = check_new_file("save_npy", p, false)?;
            lift(write_npy(&p, t))
        }
    );
    func!(
        api,
        "save_npy",
        &["t: Tensor", "path: String", "overwrite: bool"],
        "()",
        "Write a .npy file (f32); overwrite an existing one when `overwrite` is true.",
        |t: &mut Tensor, p: &str, ow: bool| -> ScriptResult<()> {
            let p = check_new_file("save_npy", p, ow)?;
            lift(write_npy(&p, t))
        }
    );
    func!(
        api,
        "load_safetensors",
        &["path: String"],
        "Map",
        "Read every tensor of a safetensors file into a map name -> Tensor.",
        |p: &str| -> ScriptResult<Map> {
            let f = lift(read_safetensors(p.as_ref()))?;
            Ok(f.tensors
                .into_iter()
                .map(|(k, v)| (k.into(), Dynamic::from(v)))
                .collect())
        }
    );
    func!(
        api,
        "save_safetensors",
        &["tensors: Map", "path: String"],
        "()",
        "Write a map name -> Tensor as f32 safetensors; refuses to overwrite.",
        |m: Map, p: &str| -> ScriptResult<()> {
            let p = check_new_file("save_safetensors", p, false)?;
            let mut named = Vec::new();
            for (k, v) in m {
                let t = v.try_cast::<Tensor>().ok_or_else(|| {
                    script_err(format!("save_safetensors: `{k}` is not a Tensor"))
                })?;
                named.push((k.to_string(), t));
            }
            lift(write_safetensors(
                &p,
                named.iter().map(|(k, t)| (k.as_str(), t)),
                SaveDtype::F32,
                None,
            ))
        }
    );

    // ---- operators: tensor ⊕ tensor, tensor ⊕ number, number ⊕ tensor ----
    macro_rules! arith {
        ($sym:literal, $tt:path, $ts:path, $st:path) => {
            api.engine
                .register_fn($sym, |a: Tensor, b: Tensor| -> R { lift($tt(&a, &b)) });
            api.engine
                .register_fn($sym, |a: Tensor, b: FLOAT| -> R { lift($ts(&a, b as f32)) });
            api.engine
                .register_fn($sym, |a: Tensor, b: INT| -> R { lift($ts(&a, b as f32)) });
            api.engine
                .register_fn($sym, |a: FLOAT, b: Tensor| -> R { lift($st(&b, a as f32)) });
            api.engine
                .register_fn($sym, |a: INT, b: Tensor| -> R { lift($st(&b, a as f32)) });
        };
    }
    arith!("+", ops::add, ops::add_scalar, ops::add_scalar);
    arith!("-", ops::sub, ops::sub_scalar, ops::rsub_scalar);
    arith!("*", ops::mul, ops::mul_scalar, ops::mul_scalar);
    arith!("/", ops::div, ops::div_scalar, ops::rdiv_scalar);
    api.engine
        .register_fn("-", |a: Tensor| -> R { lift(ops::neg(&a)) });
}
