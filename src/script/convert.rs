//! Conversions at the Rhai boundary: arrays to shapes and values, option maps with strict keys,
//! and library errors to script errors.

use rhai::{Array, Dynamic, EvalAltResult, Map, Position, INT};

use crate::tensor::Tensor;

pub type ScriptResult<T> = Result<T, Box<EvalAltResult>>;

/// A script error carrying `msg` (Rhai adds the call's position).
pub fn script_err(msg: impl std::fmt::Display) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(msg.to_string()),
        Position::NONE,
    ))
}

/// Turn a library result into a script result.
pub fn lift<T>(r: crate::Result<T>) -> ScriptResult<T> {
    r.map_err(script_err)
}

fn as_f64(op: &str, d: &Dynamic) -> ScriptResult<f64> {
    if let Ok(i) = d.as_int() {
        Ok(i as f64)
    } else if let Ok(f) = d.as_float() {
        Ok(f)
    } else if let Ok(b) = d.as_bool() {
        Ok(b as u8 as f64)
    } else {
        Err(script_err(format!(
            "{op}: expected a number, got {}",
            d.type_name()
        )))
    }
}

/// `[2, 3, 4]` -> shape. Negative entries are an error here (use `reshape`'s -1 instead).
pub fn to_shape(op: &str, arr: &Array) -> ScriptResult<Vec<usize>> {
    arr.iter()
        .map(|d| match d.as_int() {
            Ok(i) if i >= 0 => Ok(i as usize),
            _ => Err(script_err(format!(
                "{op}: shape entries must be non-negative integers, got {d}"
            ))),
        })
        .collect()
}

/// Integers of an array (may be negative).
pub fn to_ints(op: &str, arr: &Array) -> ScriptResult<Vec<i64>> {
    arr.iter()
        .map(|d| {
            d.as_int()
                .map_err(|_| script_err(format!("{op}: expected integers, got {d}")))
        })
        .collect()
}

/// Flatten a (possibly nested, rectangular) array of numbers into values and a shape.
pub fn nested_values(op: &str, arr: &Array) -> ScriptResult<(Vec<f32>, Vec<usize>)> {
    fn walk(
        op: &str,
        d: &Dynamic,
        depth: usize,
        shape: &mut Vec<usize>,
        out: &mut Vec<f32>,
    ) -> ScriptResult<()> {
        if let Some(inner) = d.read_lock::<Array>() {
            if shape.len() == depth {
                shape.push(inner.len());
            } else if shape.len() <= depth || shape[depth] != inner.len() {
                return Err(script_err(format!(
                    "{op}: nested arrays are ragged (not rectangular)"
                )));
            }
            for x in inner.iter() {
                walk(op, x, depth + 1, shape, out)?;
            }
            Ok(())
        } else {
            if shape.len() != depth {
                return Err(script_err(format!(
                    "{op}: nested arrays are ragged (not rectangular)"
                )));
            }
            out.push(as_f64(op, d)? as f32);
            Ok(())
        }
    }
    let mut shape = vec![arr.len()];
    let mut out = Vec::new();
    for x in arr {
        walk(op, x, 1, &mut shape, &mut out)?;
    }
    Ok((out, shape))
}

/// A tensor as nested arrays (a plain number for shape `[]`).
pub fn tensor_to_dynamic(t: &Tensor) -> Dynamic {
    let values = t.to_vec();
    fn build(values: &[f32], dims: &[usize]) -> Dynamic {
        match dims.split_first() {
            None => Dynamic::from_float(values[0] as f64),
            Some((&n, rest)) => {
                let step: usize = rest.iter().product();
                let arr: Array = (0..n)
                    .map(|i| build(&values[i * step..(i + 1) * step], rest))
                    .collect();
                Dynamic::from_array(arr)
            }
        }
    }
    if values.is_empty() && t.rank() == 0 {
        return Dynamic::UNIT;
    }
    build(&values, t.dims())
}

/// An option map whose keys are checked against the op's list: an unknown key is an error
/// naming it (a typo must not silently fall back to a default).
pub struct Opts<'a> {
    op: &'a str,
    map: &'a Map,
}

impl<'a> Opts<'a> {
    pub fn new(op: &'a str, map: &'a Map, allowed: &[&str]) -> ScriptResult<Self> {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(script_err(format!(
                    "{op}: unknown option `{key}` (allowed: {})",
                    allowed.join(", ")
                )));
            }
        }
        Ok(Opts { op, map })
    }

    pub fn int(&self, key: &str, default: INT) -> ScriptResult<INT> {
        match self.map.get(key) {
            None => Ok(default),
            Some(d) => d.as_int().map_err(|_| {
                script_err(format!(
                    "{}: option `{key}` must be an integer, got {d}",
                    self.op
                ))
            }),
        }
    }

    pub fn usize(&self, key: &str, default: usize) -> ScriptResult<usize> {
        let v = self.int(key, default as INT)?;
        usize::try_from(v)
            .map_err(|_| script_err(format!("{}: option `{key}` must be >= 0, got {v}", self.op)))
    }

    pub fn float(&self, key: &str, default: f64) -> ScriptResult<f64> {
        match self.map.get(key) {
            None => Ok(default),
            Some(d) => as_f64(&format!("{} option `{key}`", self.op), d),
        }
    }

    pub fn bool(&self, key: &str, default: bool) -> ScriptResult<bool> {
        match self.map.get(key) {
            None => Ok(default),
            Some(d) => d.as_bool().map_err(|_| {
                script_err(format!(
                    "{}: option `{key}` must be true or false, got {d}",
                    self.op
                ))
            }),
        }
    }
}
