//! The `strata` binary: a thin adapter over the library's CLI.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc;

fn main() -> std::process::ExitCode {
    // The commands that move messages of megabytes: the broker, and the clients that send or
    // receive whole batches at speed (without it `bench consume` replays 20-30% slower: each
    // pushed message lands in freshly faulted pages). Admin commands start faster without a
    // second exec.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::args_os().nth(1).is_some_and(|command| {
        ["serve", "bench", "consume", "produce"]
            .iter()
            .any(|c| command == *c)
    }) {
        malloc::tune();
    }
    strata::cli::main()
}
