//! `ssod run SCRIPT --shard I/N`: this process computes every N-th point of each ablation.
//!
//! The points of an `ablate` call are numbered 0, 1, 2, ... in one fixed order: the grid's
//! points (last key fastest) and, within each point, the seeds as given. Shard `I` of `N`
//! (`I` counts from 0, so a Slurm array `--array=0-7` passes `$SLURM_ARRAY_TASK_ID/8`) owns the
//! points whose number `j` has `j % N == I`: for any `N`, the shards together own every point
//! exactly once. docs/cluster.md has the whole workflow.

use std::fmt;

use crate::{Error, Result};

/// Which share of every ablation this process computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: usize,
    /// How many shards split the work (at least 1).
    pub count: usize,
}

impl Shard {
    /// Parse `I/N` (the value of `--shard`); errors name the flag and say what is expected.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "--shard `{text}`: {why} (expected I/N with 0 <= I < N, e.g. --shard 0/8 ... --shard 7/8)"
            ))
        };
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| bad("no `/` between the index and the count"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| bad("the index is not a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        if count == 0 {
            return Err(bad("the count must be at least 1"));
        }
        if index >= count {
            return Err(bad(&format!(
                "the index counts from 0, so it must be below {count}"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Whether point number `point` (in the order of the module documentation) is this
    /// shard's.
    pub fn owns(&self, point: usize) -> bool {
        point % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}
