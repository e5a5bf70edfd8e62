//! `ssod run` (notebooks), `ssod repl` and `ssod doc`.

use clap::{Args, Subcommand};

use ssod::script::notebook::{
    install_interrupt_handler, parse_set, run_notebook, NotebookOptions, RunEnd,
};
use ssod::script::shard::Shard;

#[derive(Subcommand)]
pub enum RunCommand {
    /// Run a Rhai notebook: cells at `// %% Title` lines, cached, report in the run folder
    Run(RunArgs),
    /// Interactive cells in the notebook engine (a blank line or `;;` ends a cell)
    Repl(ReplArgs),
    /// List every function scripts can call, with its signature and description
    Doc(DocArgs),
}

#[derive(Args)]
pub struct DocArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RunArgs {
    /// The script to run
    pub script: std::path::PathBuf,
    /// cpu, cuda or auto (auto: CUDA when available, else the CPU)
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// key=value read by `param("key", default)` in the script (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Run folder (must be new or empty); default runs/<script>/<YYYYmmdd-HHMMSS>/
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Ignore the cache (every cell runs; results are still cached)
    #[arg(long)]
    pub fresh: bool,
    /// Cache folder (default .ssod-cache/ next to the script); shards of a job array share one
    #[arg(long, value_name = "DIR")]
    pub cache: Option<std::path::PathBuf>,
    /// Compute only shard I of N of every ablation (I from 0; see docs/cluster.md)
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
}

#[derive(Args)]
pub struct ReplArgs {
    /// key=value read by `param("key", default)` (repeatable)
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            RunCommand::Run(args) => {
                let shard = args.shard.as_deref().map(Shard::parse).transpose()?;
                install_interrupt_handler();
                let summary = run_notebook(&NotebookOptions {
                    script: args.script.clone(),
                    device: args.device,
                    sets: args.sets,
                    out: args.out,
                    fresh: args.fresh,
                    runs_root: std::path::PathBuf::from("."),
                    cache: args.cache,
                    shard,
                })?;
                match summary.end {
                    RunEnd::Completed => Ok(()),
                    RunEnd::ShardDone(i, what) => {
                        println!(
                            "{}: stopped after cell {i}: {what} (report in {})",
                            args.script.display(),
                            summary.run_dir.display()
                        );
                        Ok(())
                    }
                    RunEnd::Failed(i) => anyhow::bail!(
                        "{}: cell {i} failed; earlier cells' results are kept (report in {})",
                        args.script.display(),
                        summary.run_dir.display()
                    ),
                    RunEnd::Interrupted(i) => {
                        eprintln!(
                            "{}: interrupted in cell {i} (report in {})",
                            args.script.display(),
                            summary.run_dir.display()
                        );
                        std::process::exit(130)
                    }
                }
            }
            RunCommand::Repl(args) => {
                install_interrupt_handler();
                let params = args
                    .sets
                    .iter()
                    .map(|s| parse_set(s))
                    .collect::<ssod::Result<_>>()?;
                let stdin = std::io::stdin();
                ssod::script::repl::run_repl(&mut stdin.lock(), std::path::Path::new("."), params)?;
                Ok(())
            }
            RunCommand::Doc(args) => {
                let (_, docs) = ssod::script::new_engine();
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&docs)?);
                } else {
                    for d in docs {
                        println!("{:<60} {}", d.signature, d.description);
                    }
                }
                Ok(())
            }
        }
    }
}
