//! The kernel files: one NVRTC module per `kernels/<stem>.cu`, embedded with `include_str!`.
//!
//! PTX is compiled once per process (per file) for the live device's `compute_XX` and kept in a
//! `OnceLock` (and on disk between processes, `ptx_cache.rs`); [`compile_all_kernels`] compiles every file for a named architecture with NVRTC
//! alone (no driver, no GPU), which is what `tests/cuda_kernels_compile.rs` runs in CI.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use crate::{Error, Result};

/// One `kernels/*.cu` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelFile {
    Elementwise,
    Reduce,
    Conv2d,
    Conv2dMma,
    Conv2dTf32,
    BatchNorm,
    Pool,
    Softmax,
    Loss,
    Simota,
    Similarity,
    Optim,
    Index,
    Crop,
    Detect,
    Layout,
}

/// How many kernel files there are (the length of the per-file caches).
pub const KERNEL_FILES: usize = 16;

impl KernelFile {
    pub const ALL: [KernelFile; KERNEL_FILES] = [
        KernelFile::Elementwise,
        KernelFile::Reduce,
        KernelFile::Conv2d,
        KernelFile::Conv2dMma,
        KernelFile::Conv2dTf32,
        KernelFile::BatchNorm,
        KernelFile::Pool,
        KernelFile::Softmax,
        KernelFile::Loss,
        KernelFile::Simota,
        KernelFile::Similarity,
        KernelFile::Optim,
        KernelFile::Index,
        KernelFile::Crop,
        KernelFile::Detect,
        KernelFile::Layout,
    ];

    /// The file's stem: `kernels/<stem>.cu`, `src/backend/cuda/<stem>.rs`.
    pub fn stem(self) -> &'static str {
        match self {
            KernelFile::Elementwise => "elementwise",
            KernelFile::Reduce => "reduce",
            KernelFile::Conv2d => "conv2d",
            KernelFile::Conv2dMma => "conv2d_mma",
            KernelFile::Conv2dTf32 => "conv2d_tf32",
            KernelFile::BatchNorm => "batch_norm",
            KernelFile::Pool => "pool",
            KernelFile::Softmax => "softmax",
            KernelFile::Loss => "loss",
            KernelFile::Simota => "simota",
            KernelFile::Similarity => "similarity",
            KernelFile::Optim => "optim",
            KernelFile::Index => "index",
            KernelFile::Crop => "crop",
            KernelFile::Detect => "detect",
            KernelFile::Layout => "layout",
        }
    }

    pub fn file_name(self) -> String {
        format!("kernels/{}.cu", self.stem())
    }

    fn index(self) -> usize {
        KernelFile::ALL.iter().position(|&f| f == self).unwrap_or(0)
    }

    /// The CUDA C source.
    pub fn source(self) -> &'static str {
        match self {
            KernelFile::Elementwise => include_str!("../../../kernels/elementwise.cu"),
            KernelFile::Reduce => include_str!("../../../kernels/reduce.cu"),
            KernelFile::Conv2d => include_str!("../../../kernels/conv2d.cu"),
            KernelFile::Conv2dMma => include_str!("../../../kernels/conv2d_mma.cu"),
            KernelFile::Conv2dTf32 => include_str!("../../../kernels/conv2d_tf32.cu"),
            KernelFile::BatchNorm => include_str!("../../../kernels/batch_norm.cu"),
            KernelFile::Pool => include_str!("../../../kernels/pool.cu"),
            KernelFile::Softmax => include_str!("../../../kernels/softmax.cu"),
            KernelFile::Loss => include_str!("../../../kernels/loss.cu"),
            KernelFile::Simota => include_str!("../../../kernels/simota.cu"),
            KernelFile::Similarity => include_str!("../../../kernels/similarity.cu"),
            KernelFile::Optim => include_str!("../../../kernels/optim.cu"),
            KernelFile::Index => include_str!("../../../kernels/index.cu"),
            KernelFile::Crop => include_str!("../../../kernels/crop.cu"),
            KernelFile::Detect => include_str!("../../../kernels/detect.cu"),
            KernelFile::Layout => include_str!("../../../kernels/layout.cu"),
        }
    }

    /// Every `extern "C" __global__` entry point the file defines, as its PTX names them.
    /// `tests/cuda_kernels_compile.rs` checks this list against the PTX and against the parity
    /// table.
    pub fn symbols(self) -> &'static [&'static str] {
        match self {
            KernelFile::Elementwise => &[
                "silu_fwd_f32",
                "silu_bwd_f32",
                "sigmoid_fwd_f32",
                "sigmoid_bwd_f32",
                "relu_fwd_f32",
                "relu_bwd_f32",
                "exp_fwd_f32",
                "exp_bwd_f32",
                "log_fwd_f32",
                "log_bwd_f32",
                "sqrt_fwd_f32",
                "sqrt_bwd_f32",
                "abs_fwd_f32",
                "abs_bwd_f32",
                "clamp_fwd_f32",
                "clamp_bwd_f32",
                "pow_fwd_f32",
                "pow_bwd_f32",
                "add_f32",
                "add_bcast_f32",
                "sub_f32",
                "sub_bcast_f32",
                "mul_f32",
                "mul_bcast_f32",
                "div_f32",
                "div_bcast_f32",
                "div_bwd_f32",
                "scale_shift_f32",
                "fill_f32",
                "f32_to_bf16",
                "bf16_to_f32",
                "add_bf16",
            ],
            KernelFile::Reduce => &["sum_partial_f32", "sum_keepdim_f32"],
            KernelFile::Conv2d => &[
                "conv2d_fwd_f32",
                "conv2d_bwd_input_f32",
                "conv2d_bwd_weight_f32",
                "conv2d_im2col_f32",
                "conv2d_im2col_bf16",
                "conv2d_im2col_bf16_of_bf16",
                "conv2d_col2im_f32",
                "conv2d_dw_fwd_f32",
                "conv2d_dw_bwd_input_f32",
                "conv2d_dw_bwd_weight_f32",
            ],
            KernelFile::Conv2dMma => &[
                "conv2d_mma_fwd_f32_to_f32",
                "conv2d_mma_fwd_f32_to_bf16",
                "conv2d_mma_fwd_bf16_to_f32",
                "conv2d_mma_fwd_bf16_to_bf16",
                "conv2d_mma_bwd_input_f32",
                "conv2d_mma_bwd_weight_f32",
                "conv2d_mma_bwd_weight_bf16",
                "conv2d_mma_m128_fwd_bf16_to_bf16",
                "conv2d_mma_m128_bwd_input_f32",
                "conv2d_mma_m128_bwd_weight_bf16",
                "conv2d_mma_pack_fwd",
                "conv2d_mma_pack_bwd_input",
                "conv2d_mma_tap_fwd_bf16_to_bf16",
                "conv2d_mma_tap_fwd_bf16_to_f32",
                "conv2d_mma_m128_tap_fwd_bf16_to_bf16",
                "conv2d_mma_tap_bwd_input_f32",
                "conv2d_mma_m128_tap_bwd_input_f32",
                "conv2d_mma_sum_splits",
            ],
            KernelFile::Conv2dTf32 => &[
                "conv2d_tf32_fwd_f32",
                "conv2d_tf32_bwd_input_f32",
                "conv2d_tf32_bwd_weight_f32",
                "conv2d_tf32_m128_fwd_f32",
                "conv2d_tf32_m128_bwd_input_f32",
                "conv2d_tf32_m128_bwd_weight_f32",
                "conv2d_tf32x3_fwd_f32",
                "conv2d_tf32x3_bwd_input_f32",
                "conv2d_tf32x3_bwd_weight_f32",
                "conv2d_tf32x3_m128_fwd_f32",
                "conv2d_tf32x3_m128_bwd_input_f32",
                "conv2d_tf32x3_m128_bwd_weight_f32",
                "conv2d_tf32_sum_splits",
                "conv2d_tf32_pack_fwd",
                "conv2d_tf32_pack_bwd_input",
                "conv2d_tf32_tap_fwd_f32",
                "conv2d_tf32_m128_tap_fwd_f32",
                "conv2d_tf32_tap_bwd_input_f32",
                "conv2d_tf32_m128_tap_bwd_input_f32",
                "conv2d_tf32x3_tap_fwd_f32",
                "conv2d_tf32x3_m128_tap_fwd_f32",
                "conv2d_tf32x3_tap_bwd_input_f32",
                "conv2d_tf32x3_m128_tap_bwd_input_f32",
            ],
            KernelFile::BatchNorm => &[
                "batch_norm_stats_partial_f32",
                "batch_norm_stats_partial_bf16",
                "batch_norm_stats_finalize_f32",
                "batch_norm_update_running_f32",
                "batch_norm_fwd_f32",
                "batch_norm_fwd_f32_to_bf16",
                "batch_norm_fwd_bf16",
                "batch_norm_bwd_partial_f32",
                "batch_norm_bwd_partial_bf16",
                "batch_norm_sums_finalize_f32",
                "batch_norm_bwd_f32",
                "batch_norm_bwd_bf16",
                "bn_silu_fwd_f32",
                "bn_silu_fwd_f32_to_bf16",
                "bn_silu_fwd_bf16",
                "bn_silu_bwd_partial_f32",
                "bn_silu_bwd_partial_bf16",
                "bn_silu_bwd_f32",
                "bn_silu_bwd_bf16",
            ],
            KernelFile::Pool => &[
                "max_pool2d_fwd_f32",
                "max_pool2d_fwd_bf16",
                "max_pool2d_bwd_f32",
                "avg_pool2d_fwd_f32",
                "avg_pool2d_bwd_f32",
                "upsample2x_fwd_f32",
                "upsample2x_fwd_bf16",
                "upsample2x_bwd_f32",
            ],
            KernelFile::Softmax => &[
                "softmax_fwd_f32",
                "softmax_bwd_f32",
                "log_softmax_fwd_f32",
                "log_softmax_bwd_f32",
            ],
            KernelFile::Loss => &[
                "bce_with_logits_fwd_f32",
                "bce_with_logits_bwd_f32",
                "box_loss_fwd_bwd_f32",
            ],
            KernelFile::Simota => &[
                "simota_cost_f32",
                "simota_dynamic_k_f32",
                "simota_resolve_f32",
            ],
            KernelFile::Similarity => &["cosine_similarity_fwd_f32", "cosine_similarity_bwd_f32"],
            KernelFile::Optim => &[
                "sgd_nesterov_f32",
                "adam_f32",
                "ema_f32",
                "sgd_nesterov_multi_f32",
                "adam_multi_f32",
                "ema_multi_f32",
            ],
            KernelFile::Index => &[
                "index_check_f32",
                "index_select_fwd_f32",
                "index_select_bwd_f32",
                "gather_fwd_f32",
                "gather_bwd_f32",
            ],
            KernelFile::Crop => &["crop_patches_fwd_f32", "crop_patches_bwd_f32"],
            KernelFile::Detect => &["decode_outputs_f32", "nms_mask_f32"],
            KernelFile::Layout => &["strided_copy_f32", "strided_copy_bf16"],
        }
    }

    /// Every symbol of every file.
    pub fn all_symbols() -> Vec<(KernelFile, &'static str)> {
        KernelFile::ALL
            .iter()
            .flat_map(|&f| f.symbols().iter().map(move |&s| (f, s)))
            .collect()
    }
}

/// Whether NVRTC can be loaded (cudarc panics on a missing library, so ask first). `Err` holds a
/// one-line reason.
pub fn nvrtc_available() -> std::result::Result<(), String> {
    // SAFETY: only tries `dlopen` on cudarc's candidate names; nothing is called.
    let present = catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() });
    match present {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "NVRTC not found: none of {} could be loaded (install the PyPI package \
             nvidia-cuda-nvrtc 13.0.x and put its lib folder on LD_LIBRARY_PATH)",
            short_candidates("nvrtc")
        )),
        Err(_) => Err("NVRTC probe panicked".into()),
    }
}

/// The NVRTC version, e.g. `(13, 0)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    nvrtc_available().map_err(Error::Cuda)?;
    catch_unwind(|| {
        let (mut major, mut minor) = (0i32, 0i32);
        // SAFETY: two valid out-pointers; the library was found above.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        match r {
            cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS => Ok((major, minor)),
            e => Err(Error::Cuda(format!("nvrtcVersion failed: {e:?}"))),
        }
    })
    .unwrap_or_else(|_| {
        Err(Error::Cuda(
            "nvrtcVersion panicked (symbol missing?)".into(),
        ))
    })
}

/// The library names cudarc tries for `lib`, shortened to the `.so.*` ones for messages.
pub(crate) fn short_candidates(lib: &str) -> String {
    let names = cudarc::get_lib_name_candidates(lib);
    let short: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| n.contains(".so."))
        .collect();
    if short.is_empty() {
        names.join(", ")
    } else {
        short.join(", ")
    }
}

/// `compute_80`, `compute_90a`, `sm_86`, ...: anything else is refused before NVRTC sees it.
pub(super) fn check_arch(arch: &str) -> Result<()> {
    let digits = arch
        .strip_prefix("compute_")
        .or_else(|| arch.strip_prefix("sm_"))
        .map(|r| r.trim_end_matches(['a', 'f']));
    match digits {
        Some(d) if !d.is_empty() && d.len() <= 3 && d.chars().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => Err(Error::InvalidArgument(format!(
            "GPU architecture `{arch}` is not of the form compute_XX (e.g. compute_80)"
        ))),
    }
}

/// Compile one kernel file to PTX text for `arch` with NVRTC (no driver needed). A compile
/// error carries the NVRTC log and the file's name.
pub fn compile_ptx(file: KernelFile, arch: &str) -> Result<String> {
    compile_source(&file.file_name(), file.source(), arch)
}

/// The helpers several kernel files share, spliced in place of their `#include` line (the
/// modules are compiled from embedded text, with no file system for NVRTC to search); see
/// [`splice_headers`].
const SHARED_HEADERS: &[(&str, &str)] = &[
    (
        "#include \"common.cuh\"",
        include_str!("../../../kernels/common.cuh"),
    ),
    (
        "#include \"bf16.cuh\"",
        include_str!("../../../kernels/bf16.cuh"),
    ),
    (
        "#include \"conv2d_mma.cuh\"",
        include_str!("../../../kernels/conv2d_mma.cuh"),
    ),
];

/// `src` with each `#include` of a [`SHARED_HEADERS`] entry replaced by the header's text,
/// framed by `#line` directives so NVRTC's messages name the header's own lines inside it and
/// the file's own lines after it.
fn splice_headers<'a>(file: &str, src: &'a str) -> Cow<'a, str> {
    let included = |line: &str| SHARED_HEADERS.iter().find(|(inc, _)| line.trim() == *inc);
    if !src.lines().any(|l| included(l).is_some()) {
        return Cow::Borrowed(src);
    }
    let mut out = String::with_capacity(src.len() + 4096);
    for (i, line) in src.lines().enumerate() {
        match included(line) {
            Some((inc, text)) => {
                let header = inc.trim_start_matches("#include ").trim_matches('"');
                out.push_str(&format!("#line 1 \"{header}\"\n{text}\n"));
                out.push_str(&format!("#line {} \"{file}\"\n", i + 2));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Cow::Owned(out)
}

/// Compile CUDA C `src` (named `name` in messages, e.g. `kernels/conv2d.cu`) to PTX for `arch`.
/// The shared headers it includes (`kernels/common.cuh`, `kernels/bf16.cuh`) are spliced in.
pub fn compile_source(name: &str, src: &str, arch: &str) -> Result<String> {
    check_arch(arch)?;
    compile_prepared(name, compile_inputs(name, src, arch), arch)
}

/// [`compile_source`] on what [`compile_inputs`] made of it (the PTX cache has them already
/// for its key), `arch` checked.
pub(super) fn compile_prepared(
    name: &str,
    (src, options): (String, Vec<String>),
    arch: &str,
) -> Result<String> {
    nvrtc_available().map_err(Error::Cuda)?;
    if src.contains('\0') {
        return Err(Error::Cuda(format!("{name}: source contains a NUL byte")));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options,
        name: Some(name.rsplit('/').next().unwrap_or(name).replace('\0', "")),
        ..Default::default()
    };
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        cudarc::nvrtc::compile_ptx_with_opts(&*src, opts)
    }));
    match compiled {
        Ok(Ok(ptx)) => Ok(ptx.to_src()),
        Ok(Err(cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. })) => {
            Err(Error::Cuda(format!(
                "NVRTC failed to compile {name} for {arch} ({nvrtc:?}):\n{}",
                log.to_string_lossy()
            )))
        }
        Ok(Err(e)) => Err(Error::Cuda(format!(
            "NVRTC failed on {name} for {arch}: {e:?}"
        ))),
        Err(_) => Err(Error::Cuda(format!(
            "NVRTC panicked while compiling {name} (library incomplete?)"
        ))),
    }
}

/// NVRTC's options for `arch` (every file the same).
fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        // Same IEEE results as the CPU for division and sqrt; no fast math.
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--ftz=false".into(),
    ]
}

/// Everything the PTX of `name` (source `src`) for `arch` depends on besides NVRTC's version:
/// the source with its headers spliced in, and the options.
pub(super) fn compile_inputs(name: &str, src: &str, arch: &str) -> (String, Vec<String>) {
    let file = name.rsplit('/').next().unwrap_or(name);
    (splice_headers(file, src).into_owned(), nvrtc_options(arch))
}

/// Compile every kernel file for `arch` (NVRTC only): `(file, PTX length in bytes)` each.
/// Fails on the first file that does not compile or lacks one of its listed symbols.
pub fn compile_all_kernels(arch: &str) -> Result<Vec<(KernelFile, usize)>> {
    let mut out = Vec::new();
    for file in KernelFile::ALL {
        let ptx = compile_ptx(file, arch)?;
        let entries = ptx_entries(&ptx);
        for sym in file.symbols() {
            if !entries.iter().any(|e| e == sym) {
                return Err(Error::Cuda(format!(
                    "{}: symbol `{sym}` is listed in modules.rs but not in the PTX",
                    file.file_name()
                )));
            }
        }
        for e in &entries {
            if !file.symbols().contains(&e.as_str()) {
                return Err(Error::Cuda(format!(
                    "{}: kernel `{e}` is not listed in KernelFile::symbols (modules.rs)",
                    file.file_name()
                )));
            }
        }
        out.push((file, ptx.len()));
    }
    Ok(out)
}

/// The names of the `.entry` points of a PTX text.
pub fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(".visible .entry ")
                .or_else(|| l.strip_prefix(".entry "))?;
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// PTX of each file for the live device's architecture, compiled once per process.
static PTX_CACHE: [OnceLock<std::result::Result<(String, String), String>>; KERNEL_FILES] =
    [const { OnceLock::new() }; KERNEL_FILES];

/// The PTX of `file` for `arch`, compiled (or read from the disk cache, `ptx_cache.rs`) on
/// first use and kept for the process. A process has one live device; a call with another
/// `arch` than the cached one compiles afresh.
pub fn cached_ptx(file: KernelFile, arch: &str) -> Result<String> {
    let slot = &PTX_CACHE[file.index()];
    let cached = slot.get_or_init(|| {
        super::ptx_cache::load_or_compile(&file.file_name(), file.source(), arch)
            .map(|p| (arch.to_string(), p))
            .map_err(|e| e.to_string())
    });
    match cached {
        Ok((a, ptx)) if a == arch => Ok(ptx.clone()),
        Ok(_) => compile_ptx(file, arch),
        Err(e) => Err(Error::Cuda(e.clone())),
    }
}
