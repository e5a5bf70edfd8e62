//! The `ssod` command line: every command lives in `src/cli/<domain>.rs`.

mod cli;

fn main() {
    // `ssod ... | head` must end quietly like other Unix tools: restore the default SIGPIPE
    // action (Rust ignores it, which turns a closed pipe into a panic in println!).
    #[cfg(unix)]
    // SAFETY: resetting a signal disposition to its default at start-up, before any threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A panic is a bug in ssod, never the user's fault: report it as one and exit non-zero
    // instead of aborting with a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("internal error (please report): {info}");
    }));
    ssod::backend::cpu::tune_allocator();
    match std::panic::catch_unwind(cli::main) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}
