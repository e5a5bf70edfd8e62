//! (in progress)

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum SynthCommand {
    /// Generate a FloW-like dataset
    Synth(Synth),
}

#[derive(Args)]
pub struct Synth {}

impl SynthCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
}
