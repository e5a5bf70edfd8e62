//! The `ssod` command line: every command lives in `src/cli/<domain>.rs`.

mod cli;

fn main() {
    if let Err(err) = cli::main() {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
