//! Compiles every `kernels/*.cu` with NVRTC (no GPU needed) for two virtual architectures and
//! for `sm_90` (a real one: NVRTC then runs the PTX assembler, so inline PTX such as the mma of
//! conv2d_mma.cu and conv2d_tf32.cu is checked too, which PTX text alone would not be), checks that
//! each file's PTX holds exactly the kernels `KernelFile::symbols` lists, and that every kernel
//! symbol has a case in the selftest parity table (docs/cuda.md).
//!
//! Without NVRTC each test that needs it prints one line and passes, unless the `CI` variable is
//! set: CI installs NVRTC (`.ci/run`), so there a missing library is a failure.

mod common;

use ssod::backend::cuda::{compile_all_kernels, nvrtc_available, nvrtc_version, KernelFile};
use ssod::selftest;

/// NVRTC loads; otherwise the test's one skip line (a failure under `CI`).
fn nvrtc_or_skip() -> bool {
    common::tool_or_skip(nvrtc_available())
}

#[test]
fn every_kernel_file_compiles_for_compute_80_and_90_and_assembles_for_sm_90() {
    if !nvrtc_or_skip() {
        return;
    }
    let (major, minor) = nvrtc_version().expect("nvrtcVersion");
    for arch in ["compute_80", "compute_90", "sm_90"] {
        let files = compile_all_kernels(arch).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files.len(), KernelFile::ALL.len());
        for (file, ptx_len) in &files {
            assert!(*ptx_len > 0, "{} gave empty PTX", file.file_name());
            println!(
                "NVRTC {major}.{minor} {arch}: {} -> {ptx_len} bytes of PTX",
                file.file_name()
            );
        }
    }
}

#[test]
fn a_bad_architecture_is_an_error_not_a_panic() {
    assert!(ssod::backend::cuda::compile_ptx(KernelFile::Optim, "compute_8x; rm").is_err());
    assert!(ssod::backend::cuda::compile_ptx(KernelFile::Optim, "").is_err());
}

#[test]
fn every_kernel_symbol_has_a_parity_case() {
    let covered = selftest::covered_symbols();
    let missing: Vec<String> = KernelFile::all_symbols()
        .into_iter()
        .filter(|(_, s)| !covered.contains(s))
        .map(|(f, s)| format!("{} ({})", s, f.file_name()))
        .collect();
    assert!(
        missing.is_empty(),
        "kernels without a parity case in src/selftest/cases/*.rs: {}",
        missing.join(", ")
    );
    // And no parity case names a kernel that does not exist.
    let all: Vec<&str> = KernelFile::all_symbols()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    for s in covered {
        assert!(all.contains(&s), "parity case names unknown kernel `{s}`");
    }
}

#[test]
fn every_kernel_file_opens_with_its_contract() {
    for f in KernelFile::ALL {
        let src = f.source();
        let head: String = src.lines().take(3).collect::<Vec<_>>().join("\n");
        assert!(
            head.starts_with(&format!("// {}.cu:", f.stem())),
            "{} must open with `// {}.cu: <what it computes>`",
            f.file_name(),
            f.stem()
        );
        for word in ["Contract", "Checked against", "Launch geometry", "Check:"] {
            assert!(
                src.contains(word),
                "{}: contract lacks `{word}`",
                f.file_name()
            );
        }
    }
}

#[test]
fn a_compile_error_after_a_shared_header_names_the_files_own_line() {
    if !nvrtc_or_skip() {
        return;
    }
    // Line 4 of the file, whatever length the spliced header has.
    let src = "#include \"common.cuh\"\n\nextern \"C\" __global__ void broken(float* y) {\n    \
               y[0] = sigmoid_stable(undefined_name);\n}\n";
    let err = ssod::backend::cuda::compile_source("kernels/broken.cu", src, "compute_80")
        .expect_err("must not compile")
        .to_string();
    assert!(err.contains("broken.cu(4)"), "wrong or missing line: {err}");
    // The header itself compiled: sigmoid_stable is not what the log complains about.
    assert!(!err.contains("sigmoid_stable\" is undefined"), "{err}");
}

#[test]
fn a_compile_error_names_the_file_and_carries_the_nvrtc_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let src = "extern \"C\" __global__ void broken(float* y) {\n    y[0] = undefined_name;\n}\n";
    let err = ssod::backend::cuda::compile_source("kernels/broken.cu", src, "compute_80")
        .expect_err("must not compile")
        .to_string();
    assert!(err.contains("kernels/broken.cu"), "{err}");
    assert!(
        err.contains("undefined_name"),
        "the NVRTC log is missing: {err}"
    );
    println!("{err}");
}

/// Every Rust mirror of a CUDA struct (`src/backend/cuda/structs.rs`) has the CUDA struct's
/// size, alignment and field offsets: each kernel file compiles with `static_assert`s of the
/// size and alignment the Rust side asserts at compile time appended, and a probe kernel whose
/// PTX holds what the CUDA compiler computed for each. A wrong size is refused (the check can
/// fail).
#[test]
fn every_cuda_struct_has_the_layout_its_rust_mirror_asserts() {
    use ssod::backend::cuda::structs::{
        layout_check_source, probe_kernel, probed_layout, struct_layouts,
    };
    if !nvrtc_or_skip() {
        return;
    }
    let layouts = struct_layouts();
    assert!(layouts.len() >= 9, "{layouts:?}");
    let compile = |file: KernelFile, checks: &str| {
        let src = format!("{}\n{checks}", file.source());
        ssod::backend::cuda::compile_source(&file.file_name(), &src, "compute_80")
    };
    let mut checked = 0;
    for file in KernelFile::ALL {
        let mine: Vec<_> = layouts.iter().filter(|l| l.file == file).collect();
        if mine.is_empty() {
            continue;
        }
        let checks: String = mine.iter().map(|l| layout_check_source(l)).collect();
        let ptx = compile(file, &checks).unwrap_or_else(|e| panic!("{e}"));
        for l in mine {
            let mut want = vec![l.size as u64, l.align as u64];
            want.extend(l.fields.iter().map(|&(_, offset)| offset as u64));
            let got = probed_layout(&ptx, &probe_kernel(l))
                .unwrap_or_else(|| panic!("{}: probe not found in the PTX", l.name));
            assert_eq!(
                got, want,
                "{} (size, alignment, offsets of {:?})",
                l.name, l.fields
            );
            checked += 1;
        }
    }
    assert_eq!(checked, layouts.len());
    let mut wrong = layouts[0];
    wrong.size += 8;
    let err = compile(wrong.file, &layout_check_source(&wrong))
        .expect_err("a wrong size must not compile")
        .to_string();
    assert!(err.contains(&format!("size of {}", wrong.name)), "{err}");
}

/// Every kernel-like name written as a string in the launchers (`"…_f32"`, `"…_bf16"`) is a
/// symbol of some kernel file: a typo there would surface only on a GPU, as a missing function.
/// Needs no NVRTC.
#[test]
fn every_kernel_name_in_the_launchers_exists() {
    let all: Vec<&str> = KernelFile::all_symbols()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda");
    let mut stack = vec![root];
    let mut checked = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // The string literals: every other piece between double quotes.
            for lit in text.split('"').skip(1).step_by(2) {
                let kernel_like = lit.starts_with(|c: char| c.is_ascii_lowercase())
                    && lit
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && (lit.ends_with("_f32") || lit.ends_with("_bf16"));
                if kernel_like {
                    assert!(
                        all.contains(&lit),
                        "{}: `{lit}` is no kernel symbol",
                        path.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(
        checked > 50,
        "found only {checked} kernel names: the scan is broken"
    );
}

/// The PTX disk cache (src/backend/cuda/ptx_cache.rs): an entry is written once, read back by
/// the next call instead of compiling, keyed by the source, and a torn entry is compiled over.
#[test]
fn the_ptx_disk_cache_reads_its_own_entries_and_compiles_over_torn_ones() {
    use ssod::backend::cuda::ptx_cache::load_or_compile_in;
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ssod-ptx-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let src = "extern \"C\" __global__ void twice(float* x) { x[threadIdx.x] *= 2.0f; }\n";
    let entries = || -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let first = load_or_compile_in(&dir, "kernels/twice.cu", src, "compute_80").unwrap();
    assert!(first.contains(".entry twice"), "{first}");
    let files = entries();
    assert_eq!(files.len(), 1, "{files:?}");
    let entry = &files[0];
    assert!(entry
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("twice-compute_80-"));
    // The second call reads the entry: a planted body (with the entry's own trailer) comes back.
    let text = std::fs::read_to_string(entry).unwrap();
    let trailer = text
        .strip_prefix(first.as_str())
        .expect("entry = PTX + trailer");
    std::fs::write(entry, format!("planted{trailer}")).unwrap();
    let again = load_or_compile_in(&dir, "kernels/twice.cu", src, "compute_80").unwrap();
    assert_eq!(again, "planted");
    // A torn entry (no trailer) is not used: compiled over and rewritten.
    std::fs::write(entry, &first[..first.len() / 2]).unwrap();
    let repaired = load_or_compile_in(&dir, "kernels/twice.cu", src, "compute_80").unwrap();
    assert_eq!(repaired, first);
    assert_eq!(std::fs::read_to_string(entry).unwrap(), text);
    // Another source or architecture is another entry.
    let other = src.replace("2.0f", "3.0f");
    load_or_compile_in(&dir, "kernels/twice.cu", &other, "compute_80").unwrap();
    load_or_compile_in(&dir, "kernels/twice.cu", src, "compute_90").unwrap();
    assert_eq!(entries().len(), 3);
    // A folder that cannot be written (a file stands where it would be) still compiles.
    let blocked = dir.join("blocked");
    std::fs::write(&blocked, "").unwrap();
    let ptx = load_or_compile_in(&blocked, "kernels/twice.cu", src, "compute_80").unwrap();
    assert_eq!(ptx, first);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `ssod selftest --compile ARCH` fills the PTX cache for every kernel file without a GPU (what
/// benches/gpu/prepare.sh runs for the device machine), and refuses when the cache is off.
#[test]
fn selftest_compile_fills_the_ptx_cache_for_every_file() {
    let ssod = |cache: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ssod"))
            .args(["selftest", "--compile", "compute_80"])
            .env("SSOD_PTX_CACHE", cache)
            .output()
            .unwrap()
    };
    let off = ssod("off");
    assert!(!off.status.success());
    assert!(String::from_utf8_lossy(&off.stderr).contains("SSOD_PTX_CACHE"));
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ssod-ptx-compile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = ssod(dir.to_str().unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = KernelFile::ALL.len();
    assert!(stdout.contains(&format!("{n} files in")), "{stdout}");
    let entries = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(entries, n, "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
