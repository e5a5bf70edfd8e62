//! `ssod run`: evaluate a Rhai script.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum RunCommand {
    /// Run a Rhai script (notebook)
    Run(RunArgs),
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
        }
    }
}
