//! The `strata` binary: a thin adapter over the library's CLI.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc;

fn main() -> std::process::ExitCode {
    // Only the broker handles request buffers of megabytes; the other commands start (and end)
    // faster without a second exec.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::args_os()
        .nth(1)
        .is_some_and(|command| command == "serve")
    {
        malloc::tune();
    }
    strata::cli::main()
}
