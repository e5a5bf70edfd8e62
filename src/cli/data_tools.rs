//! (in progress)

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DataToolsCommand {
    /// Convert VOC annotations to COCO json
    Voc2Coco(Voc2Coco),
}

#[derive(Args)]
pub struct Voc2Coco {}

impl DataToolsCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        anyhow::bail!("not implemented yet")
    }
}
