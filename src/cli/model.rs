//! `ssod info`: a model's parameters and GFLOPs.

use clap::{Args, Subcommand};
use ssod::models::{YoloX, YoloXConfig};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Print a model's parameter count and GFLOPs (YOLOX's accounting)
    Info(InfoArgs),
}

#[derive(Args)]
pub struct InfoArgs {
    /// Model name: yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l, yolox-x
    pub model: String,
    /// Number of classes
    #[arg(long, default_value_t = 80)]
    pub classes: usize,
    /// Square input size in pixels (a multiple of 32)
    #[arg(long, default_value_t = 640)]
    pub size: usize,
}

impl ModelCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            ModelCommand::Info(a) => {
                if a.size == 0 || a.size % 32 != 0 {
                    anyhow::bail!("--size must be a positive multiple of 32, got {}", a.size);
                }
                let m = YoloX::new(YoloXConfig::variant(&a.model, a.classes)?)?;
                let anchors = YoloX::anchor_grid(a.size, a.size).len();
                println!("model      {}", a.model);
                println!("classes    {}", a.classes);
                println!(
                    "parameters {} ({:.2} M)",
                    m.num_params(),
                    m.num_params() as f64 / 1e6
                );
                println!(
                    "GFLOPs     {:.2} at {}x{} (2 x (conv MACs + 2 x BN elements), as YOLOX)",
                    m.gflops(a.size, a.size),
                    a.size,
                    a.size
                );
                println!("anchors    {anchors}");
                Ok(())
            }
        }
    }
}
