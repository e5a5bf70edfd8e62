//! The arithmetic of a run's matrix products on the GPU (the recipe's and the pretraining
//! configs' `precision` key), and setting the CUDA device up for it.

use serde::{Deserialize, Serialize};

use crate::backend::cuda::ConvAlgorithm;

/// Arithmetic of the matrix products on the GPU (convolutions, linear layers); the CPU always
/// computes in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 operands, f32 FMA (cuBLAS default math): the same function as the CPU.
    F32,
    /// TF32 tensor cores (10-bit mantissa operands, f32 accumulation): PyTorch's default for
    /// convolutions (`cudnn.allow_tf32`). Relative error near 3e-4.
    Tf32,
    /// bf16 tensor cores: both operands of every product rounded to bf16, f32 accumulation and
    /// output; activations between convs (conv outputs without bias, BN(+SiLU) outputs, cat,
    /// residual adds, pooling) kept as bf16 (`backend::cuda::bf16`); parameters (master
    /// weights), gradients and optimizer state stay f32. Relative error near 3e-3 per product (`ssod selftest` checks it at 1e-2).
    Bf16,
}

impl Precision {
    /// `f32`, `tf32` or `bf16` (the recipe's and the command line's spelling).
    pub fn from_name(name: &str) -> crate::Result<Self> {
        match name {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(crate::Error::InvalidArgument(format!(
                "precision {other:?}: expected f32, tf32 or bf16"
            ))),
        }
    }

    /// Set the CUDA device up for a run in this precision with `conv` (None: the process's
    /// default algorithm). Set either way: the device outlives a run, and a notebook's next run
    /// must not inherit this one's choice.
    pub fn configure_cuda(self, conv: Option<ConvAlgorithm>) -> crate::Result<()> {
        let dev = crate::backend::cuda::device()?;
        dev.set_matrix_precision(self.matrix_precision())?;
        dev.set_conv_algorithm(conv.unwrap_or_else(ConvAlgorithm::process_default));
        Ok(())
    }

    /// The CUDA device's matrix-product mode for this precision.
    pub fn matrix_precision(self) -> crate::backend::cuda::MatrixPrecision {
        use crate::backend::cuda::MatrixPrecision;
        match self {
            Precision::F32 => MatrixPrecision::F32,
            Precision::Tf32 => MatrixPrecision::Tf32,
            Precision::Bf16 => MatrixPrecision::Bf16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::MatrixPrecision;

    #[test]
    fn precision_names_parse_and_pick_the_device_mode() {
        for (name, p, m) in [
            ("f32", Precision::F32, MatrixPrecision::F32),
            ("tf32", Precision::Tf32, MatrixPrecision::Tf32),
            ("bf16", Precision::Bf16, MatrixPrecision::Bf16),
        ] {
            let parsed: Precision = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(parsed, p);
            assert_eq!(parsed.matrix_precision(), m);
        }
        assert!(serde_json::from_str::<Precision>("\"fp16\"").is_err());
    }
}
