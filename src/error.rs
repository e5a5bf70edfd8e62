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

/// What the driver's out-of-memory error carries in its text.
const GPU_OUT_OF_MEMORY: &str = "CUDA_ERROR_OUT_OF_MEMORY";

impl Error {
    /// A GPU out-of-memory error (an allocation the driver refused).
    pub fn is_gpu_out_of_memory(&self) -> bool {
        matches!(self, Error::Cuda(m) if m.contains(GPU_OUT_OF_MEMORY))
    }

    /// An out-of-memory error with what was running and the settings that decide the memory,
    /// so the message says what to lower; other errors unchanged.
    pub fn with_gpu_memory_context(self, what: impl FnOnce() -> String) -> Self {
        if !self.is_gpu_out_of_memory() {
            return self;
        }
        Error::Cuda(format!(
            "{}: the GPU is out of memory ({self}); lower the batch size or the input size, or \
             use precision \"bf16\" (half the activation memory); the files written so far \
             (checkpoints included) are complete",
            what()
        ))
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The driver's out-of-memory error (as cudarc prints it) gains what ran and what to lower;
    /// any other error passes unchanged.
    #[test]
    fn gpu_out_of_memory_says_what_to_lower() {
        let oom = Error::Cuda(
            "alloc of 1048576 f32 elements: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
                .into(),
        );
        assert!(oom.is_gpu_out_of_memory());
        let msg = oom
            .with_gpu_memory_context(|| "training step (batch 64, input 640x640)".into())
            .to_string();
        for part in [
            "training step (batch 64, input 640x640)",
            "out of memory",
            "batch size",
            "bf16",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        let other = Error::Cuda("launch failed: CUDA_ERROR_ILLEGAL_ADDRESS".into());
        assert!(!other.is_gpu_out_of_memory());
        let same = other.with_gpu_memory_context(|| unreachable!("only for out of memory"));
        assert_eq!(
            same.to_string(),
            "cuda: launch failed: CUDA_ERROR_ILLEGAL_ADDRESS"
        );
    }
}
