//! (in progress)

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// COCO evaluation
    Eval(Eval),
}

#[derive(Args)]
pub struct Eval {}

impl EvalCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
}
