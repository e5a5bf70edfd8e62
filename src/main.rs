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
    tune_allocator();
    match std::panic::catch_unwind(cli::main) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            eprintln!("error: {err:#}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101),
    }
}

/// Keep freed tensor buffers in the heap instead of returning them to the kernel: glibc maps
/// large blocks (>= 128 KiB .. 32 MiB) with mmap and unmaps them on free, so every op output
/// paid page faults and zeroing. Measured in BENCHMARKS.md ("training step"). Blocks over
/// 32 MiB (YOLOX-S at 640 px / batch 8 has many: 105 MB for a 32-channel map at 320²) would
/// still be mapped fresh, so the main thread's arena never uses mmap at all (worker threads'
/// arenas still fall back to it for blocks larger than their 64 MiB heaps).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called before other threads.
    unsafe {
        // 32 MiB is glibc's ceiling for the mmap threshold (larger values are refused).
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
