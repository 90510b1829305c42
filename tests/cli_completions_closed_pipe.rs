//! `strata completions bash | head -1`: a reader that closes the pipe early ends the command
//! quietly and successfully, without a broken-pipe panic.

use std::process::{Command, Stdio};

#[test]
fn completions_into_a_closed_pipe_exit_quietly_and_successfully() {
    for args in [&["completions", "bash"][..], &["completions", "zsh"][..]] {
        // The read end is closed before the command starts, so its first write fails (EPIPE):
        // what `| head -1` does to the rest of the script, without depending on timing.
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run strata");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(output.status.success(), "{args:?}: {}", output.status);
    }
}
