//! The `strata` binary: a thin adapter over the library's CLI.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc::tune();
    strata::cli::main()
}
