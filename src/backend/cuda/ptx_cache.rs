//! PTX kept on disk between processes. NVRTC takes seconds per kernel file (the tensor-core
//! convs most), and every `ssod` command that touches the GPU would pay it again; JIT tools
//! keep their compiled kernels the same way (CuPy's kernel cache, Triton's).
//!
//! An entry is keyed by everything its PTX depends on: the source with its headers spliced in,
//! the architecture, NVRTC's options and version, and this crate's version, so an edited kernel
//! or another NVRTC compiles afresh and a stale entry is never read. Entries are written
//! through a temporary file and a rename and end with a trailer line naming their key: a torn
//! or foreign file fails the check and is compiled over.
//!
//! Where: `SSOD_PTX_CACHE` (a folder, or `off`), else `$XDG_CACHE_HOME/ssod/ptx`, else
//! `$HOME/.cache/ssod/ptx`. The cache is a speed-up only: a folder that cannot be read or
//! written means compiling, never an error.

use std::path::{Path, PathBuf};

use super::modules::{check_arch, compile_inputs, compile_prepared, compile_source, nvrtc_version};
use crate::digest::hash_parts;
use crate::Result;

/// The cache folder, or `None` when it is off or no home is known.
pub fn cache_dir() -> Option<PathBuf> {
    let from = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
    if let Some(v) = from("SSOD_PTX_CACHE") {
        return (v != "off" && v != "0").then(|| PathBuf::from(v));
    }
    from("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| from("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|base| base.join("ssod").join("ptx"))
}

/// The PTX of `name` (source `src`) for `arch`: from the cache when it holds this exact
/// compilation, else compiled by NVRTC and stored.
pub fn load_or_compile(name: &str, src: &str, arch: &str) -> Result<String> {
    match cache_dir() {
        Some(dir) => load_or_compile_in(&dir, name, src, arch),
        None => compile_source(name, src, arch),
    }
}

/// [`load_or_compile`] with the cache in `dir`.
pub fn load_or_compile_in(dir: &Path, name: &str, src: &str, arch: &str) -> Result<String> {
    check_arch(arch)?; // before it names a file
    let (major, minor) = nvrtc_version()?;
    let (spliced, options) = compile_inputs(name, src, arch);
    let key = hash_parts(&[
        "ssod-ptx-v1",
        env!("CARGO_PKG_VERSION"),
        &format!("nvrtc {major}.{minor}"),
        arch,
        &options.join(" "),
        &spliced,
    ]);
    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("kernel");
    let path = dir.join(format!("{stem}-{arch}-{}.ptx", &key[..16]));
    let trailer = format!("\n// ssod-ptx-cache {key}\n");
    if let Some(ptx) = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| text.strip_suffix(&trailer).map(str::to_string))
    {
        return Ok(ptx);
    }
    let ptx = compile_prepared(name, (spliced, options), arch)?;
    // Best effort: a read-only or full disk costs the next process a compile, nothing else.
    let _ = crate::atomic_file::write_atomic(&path, format!("{ptx}{trailer}").as_bytes());
    Ok(ptx)
}
