//! `ssod run`: evaluate a Rhai script.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum RunCommand {
    /// Run a Rhai script (notebook)
    Run(RunArgs),
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
}

impl RunCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            RunCommand::Run(args) => {
                let run = ssod::script::run_script_file(&args.script)?;
                if !run.value.is_unit() {
                    println!("{}", run.value);
                }
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
