//! `ssod selftest`: run the CUDA parity table (GPU against the CPU references), or only the CPU
//! references when there is no GPU.

use clap::{Args, Subcommand, ValueEnum};

use ssod::backend::cuda::{ptx_cache, CudaAvailability, KernelFile};
use ssod::selftest;

#[derive(Subcommand)]
pub enum SelftestCommand {
    /// Check every CUDA kernel against the CPU on fresh random inputs (parity table)
    Selftest(SelftestArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SelftestDevice {
    /// The GPU; fails when none is usable
    Cuda,
    /// The CPU references alone
    Cpu,
    /// The GPU when one is usable, else the CPU (saying why)
    Auto,
}

#[derive(Args)]
pub struct SelftestArgs {
    /// Where to run
    #[arg(long, value_enum, default_value = "auto")]
    pub device: SelftestDevice,
    /// Seed of the random inputs
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Instead of the table: compile every kernel file for this architecture (e.g. compute_90)
    /// with NVRTC alone (no GPU needed) into the PTX cache, timing each file; a GPU of that
    /// architecture then starts without compiling (set SSOD_PTX_CACHE to fill another folder)
    #[arg(long, value_name = "ARCH", conflicts_with = "device")]
    pub compile: Option<String>,
}

impl SelftestCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let SelftestCommand::Selftest(args) = self;
        if let Some(arch) = &args.compile {
            return compile_into_cache(arch);
        }
        let dev = match args.device {
            SelftestDevice::Cpu => None,
            SelftestDevice::Cuda => match CudaAvailability::probe() {
                Ok(d) => Some(d),
                Err(reason) => anyhow::bail!("selftest --device cuda: no usable GPU: {reason}"),
            },
            SelftestDevice::Auto => match CudaAvailability::probe() {
                Ok(d) => Some(d),
                Err(reason) => {
                    println!("selftest: no usable GPU ({reason}); running the CPU references only");
                    None
                }
            },
        };
        let rows = match &dev {
            Some(d) => selftest::run_cuda(d, args.seed, |l| println!("{l}")),
            None => selftest::run_cpu(args.seed, |l| println!("{l}")),
        };
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| !r.passed())
            .map(|r| format!("{} / {}", r.case, r.output))
            .collect();
        println!("{} rows, {} failed", rows.len(), failed.len());
        if !failed.is_empty() {
            // Named again at the end, where a log's tail shows them.
            anyhow::bail!(
                "selftest: {} of {} rows failed: {}",
                failed.len(),
                rows.len(),
                failed.join("; ")
            );
        }
        Ok(())
    }
}

/// `selftest --compile ARCH`: every kernel file through the PTX disk cache, one line each.
fn compile_into_cache(arch: &str) -> anyhow::Result<()> {
    let Some(dir) = ptx_cache::cache_dir() else {
        anyhow::bail!("selftest --compile: the PTX cache is off (SSOD_PTX_CACHE={{off,0}})");
    };
    println!("PTX cache {} for {arch}", dir.display());
    let mut total = 0.0;
    for file in KernelFile::ALL {
        let t = std::time::Instant::now();
        let ptx = ptx_cache::load_or_compile_in(&dir, &file.file_name(), file.source(), arch)?;
        let s = t.elapsed().as_secs_f64();
        total += s;
        println!("{:<28} {:>9} bytes {s:>7.2} s", file.file_name(), ptx.len());
    }
    println!("{} files in {total:.1} s", KernelFile::ALL.len());
    Ok(())
}
