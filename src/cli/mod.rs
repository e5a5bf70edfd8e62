//! Command-line parsing. Each domain owns its subcommands in its own file and is flattened here,
//! so adding a command touches one file.

use clap::{Parser, Subcommand};

mod bench;
mod bench_batches;
mod bench_conv;
mod bench_pretrain;
mod bench_simota;
mod data_tools;
mod detect;
mod eval;
mod export;
mod model;
mod pretrain;
mod run;
mod selftest;
mod synth;
mod train;

#[derive(Parser)]
#[command(
    name = "ssod",
    version,
    about = "Self-supervised pretraining workbench for object detectors"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Run(run::RunCommand),
    #[command(flatten)]
    Eval(eval::EvalCommand),
    #[command(flatten)]
    DataTools(data_tools::DataToolsCommand),
    #[command(flatten)]
    Synth(synth::SynthCommand),
    #[command(flatten)]
    Model(model::ModelCommand),
    #[command(flatten)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Detect(detect::DetectCommand),
    #[command(flatten)]
    Selftest(selftest::SelftestCommand),
    #[command(flatten)]
    Pretrain(pretrain::PretrainCommand),
    #[command(flatten)]
    Export(export::ExportCommand),
    #[command(flatten)]
    Train(train::TrainCommand),
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(c) => c.execute(),
        Command::Eval(c) => c.execute(),
        Command::DataTools(c) => c.execute(),
        Command::Synth(c) => c.execute(),
        Command::Model(c) => c.execute(),
        Command::Bench(c) => c.execute(),
        Command::Detect(c) => c.execute(),
        Command::Selftest(c) => c.execute(),
        Command::Pretrain(c) => c.execute(),
        Command::Export(c) => c.execute(),
        Command::Train(c) => c.execute(),
    }
}
