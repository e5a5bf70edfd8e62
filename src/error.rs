//! The library's one error type. Every variant names what the user can act on: the op and the
//! shapes, the file and the field, the argument.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that had to agree did not (`op` is the op's name, e.g. "conv2d").
    #[error("{op}: shape mismatch: expected {expected}, got {got}")]
    ShapeMismatch {
        op: String,
        expected: String,
        got: String,
    },
    /// An op was called with arguments it cannot accept (bad axis, bad stride, wrong dtype...).
    #[error("{op}: {msg}")]
    Op { op: String, msg: String },
    /// Reading or writing a file failed. The OS error is part of the message and not a
    /// `source` (a chain printer such as anyhow's `{:#}` would say it twice).
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// A file was read but its content is wrong (`file` names it; `msg` says where and what).
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    /// A configuration key or command-line value is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// The autograd tape found something it cannot do (second backward, non-scalar root...).
    #[error("autograd: {0}")]
    Autograd(String),
    /// Anomaly mode found a NaN or Inf in an op's output.
    #[error("anomaly: op `{op}` produced {what} in an output of shape {shape}")]
    Anomaly {
        op: String,
        what: String,
        shape: String,
    },
    /// The CUDA backend is missing or failed.
    #[error("cuda: {0}")]
    Cuda(String),
    /// Anything else, with a message that says what happened.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn op(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Op {
            op: op.into(),
            msg: msg.into(),
        }
    }

    pub fn shape(
        op: impl Into<String>,
        expected: impl std::fmt::Debug,
        got: impl std::fmt::Debug,
    ) -> Self {
        Error::ShapeMismatch {
            op: op.into(),
            expected: format!("{expected:?}"),
            got: format!("{got:?}"),
        }
    }

    pub fn io(path: impl Into<PathBuf>, reason: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            reason,
        }
    }

    pub fn format(file: impl std::fmt::Display, msg: impl Into<String>) -> Self {
        Error::Format {
            file: file.to_string(),
            msg: msg.into(),
        }
    }
}

/// `bail!`-style shorthand used across the library.
#[macro_export]
macro_rules! op_err {
    ($op:expr, $($arg:tt)*) => { $crate::Error::op($op, format!($($arg)*)) };
}
