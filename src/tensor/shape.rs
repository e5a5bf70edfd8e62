//! Shapes, strides and broadcasting rules.

use crate::{Error, Result};

/// Dimensions of a tensor, outermost first (NCHW for images).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<usize>);

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<&Shape> for Shape {
    fn from(s: &Shape) -> Self {
        s.clone()
    }
}

impl Shape {
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// The number of elements, saturating at `usize::MAX`: a shape too large to exist never
    /// equals a real buffer's length (an unchecked product wraps: `[2^32, 2^32]` would be 0).
    pub fn numel(&self) -> usize {
        self.checked_numel().unwrap_or(usize::MAX)
    }
    /// The number of elements, None when it does not fit in a `usize`.
    pub fn checked_numel(&self) -> Option<usize> {
        self.0.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }
    /// The number of elements, or an error naming `op` and the shape when the product
    /// overflows: for shapes that come from files and scripts.
    pub fn numel_for(&self, op: &str) -> Result<usize> {
        self.checked_numel().ok_or_else(|| {
            Error::op(
                op,
                format!("shape {self} has more elements than this machine can address"),
            )
        })
    }
    /// Row-major strides in elements.
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1;
        for i in (0..self.0.len()).rev() {
            strides[i] = acc;
            acc *= self.0[i];
        }
        strides
    }
    /// Resolve a possibly negative axis (`-1` = last) against this rank.
    pub fn axis(&self, op: &str, axis: isize) -> Result<usize> {
        let rank = self.rank() as isize;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(Error::op(
                op,
                format!("axis {axis} is out of range for a tensor of shape {self}"),
            ));
        }
        Ok(a as usize)
    }
    /// NumPy broadcasting of two shapes.
    pub fn broadcast(op: &str, a: &Shape, b: &Shape) -> Result<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = vec![0; rank];
        for (i, o) in out.iter_mut().enumerate() {
            let da = if i + a.rank() >= rank {
                a.0[i + a.rank() - rank]
            } else {
                1
            };
            let db = if i + b.rank() >= rank {
                b.0[i + b.rank() - rank]
            } else {
                1
            };
            *o = if da == db || db == 1 {
                da
            } else if da == 1 {
                db
            } else {
                return Err(Error::ShapeMismatch {
                    op: op.to_string(),
                    expected: format!("shapes broadcastable with {a}"),
                    got: format!("{b}"),
                });
            };
        }
        Ok(Shape(out))
    }
    /// Strides that read a tensor of this shape (with `strides`) as if it had shape `target`
    /// (broadcast dims get stride 0). `target` must be a broadcast of `self`.
    pub fn broadcast_strides(&self, strides: &[usize], target: &Shape) -> Vec<usize> {
        let off = target.rank() - self.rank();
        (0..target.rank())
            .map(|i| {
                if i < off || self.0[i - off] == 1 && target.0[i] != 1 {
                    0
                } else {
                    strides[i - off]
                }
            })
            .collect()
    }
}
