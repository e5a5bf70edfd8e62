//! Every kernel of `kernels/*.cu` run on the CPU, without a GPU or NVRTC: each file is compiled as
//! plain C++ with `kernels/emu/emu.h`, every parity case of the selftest table is dumped with its
//! CPU outputs, and `kernels/emu/run.py` calls the kernels (through ctypes, numpy standing in for
//! cuBLAS) and compares with the selftest's own measures.
//!
//! This checks the kernels' arithmetic and indexing on machines that never see a GPU. Most
//! kernels run one thread per block (THREADS = 1: no races or block-level reductions show); the
//! tensor-core convs run each block's threads as OS threads with `mma.sync` emulated per warp.
//! Needs g++ and python3 with numpy; without them the test prints one line and passes, unless
//! `CI` is set (`.ci/run` installs both).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Ok when this machine can run the emulation; why not otherwise.
fn tools() -> Result<(), String> {
    common::runs("g++", &["--version"])?;
    common::runs("python3", &["-c", "import numpy"])
}

/// `kernels/<file>.cu` → `<work>/lib<file>.so`, with the kernels' `THREADS` set to 1 so the block
/// trees run as plain loops.
fn compile_kernels(work: &Path) {
    let kernels = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .expect("read kernels/")
        .map(|e| e.expect("kernels/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no kernels/*.cu");
    for cu in files {
        let stem = cu.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(&cu).expect("read kernel source");
        assert!(
            source.contains("#define THREADS 256") || !source.contains("THREADS"),
            "{}: the emulation rewrites `#define THREADS 256`; update it with the kernel",
            cu.display()
        );
        let cpp = work.join(format!("{stem}.cpp"));
        std::fs::write(
            &cpp,
            source.replace("#define THREADS 256", "#define THREADS 1"),
        )
        .expect("write .cpp");
        // -ffp-contract=off: no fused multiply-adds, as the kernels' _rn intrinsics promise.
        let out = Command::new("g++")
            .args(["-O1", "-ffp-contract=off", "-shared", "-fPIC", "-I"])
            .arg(&kernels)
            .arg("-include")
            .arg(kernels.join("emu/emu.h"))
            .arg(&cpp)
            .arg("-o")
            .arg(work.join(format!("lib{stem}.so")))
            .output()
            .expect("run g++");
        assert!(
            out.status.success(),
            "g++ could not compile {} under the emulation header:\n{}",
            cu.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every parity case's inputs and CPU outputs as raw little-endian f32 files:
/// `<dir>/<case>/in<i>.f32` and `out_<name>.f32`, the case name with non-alphanumerics as `_`.
fn dump_parity_cases(dir: &Path) {
    let write = |p: PathBuf, v: &[f32]| {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        std::fs::write(p, bytes).expect("write dump");
    };
    for case in ssod::selftest::cases() {
        let name: String = case
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir dump");
        let mut rng = ssod::rng::rng_for(0, case.name);
        let inputs = (case.make)(&mut rng);
        for (i, v) in inputs.iter().enumerate() {
            write(d.join(format!("in{i}.f32")), v);
        }
        let out = (case.cpu)(&inputs).expect("cpu side of a parity case");
        for (n, v) in &out.values {
            write(d.join(format!("out_{n}.f32")), v);
        }
    }
}

#[test]
fn parity_cases_pass_through_the_host_emulated_kernels() {
    if !common::tool_or_skip(tools()) {
        return;
    }
    let work = std::env::temp_dir().join(format!("ssod-kernel-emu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("dump")).expect("mkdir work");
    compile_kernels(&work);
    dump_parity_cases(&work.join("dump"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/emu/run.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&work)
        .output()
        .expect("run kernels/emu/run.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "kernel emulation failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&work);
}
