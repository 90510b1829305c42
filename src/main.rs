//! The `strata` binary: a thin adapter over the library's CLI.

fn main() -> std::process::ExitCode {
    strata::cli::main()
}
