//! Compiles proto/ into Rust with tonic-prost-build, using the protoc that ships inside the
//! `protoc-bin-vendored` crate so that a fresh machine needs no system package.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Every `bytes` field is `bytes::Bytes`: batches go to and from the wire without a copy.
        .bytes(".")
        .file_descriptor_set_path(out_dir.join("strata_descriptor.bin"))
        .compile_with_config(config, &["proto/strata/v1/strata.proto"], &["proto"])?;
    // The brokers' internal Raft service: its own descriptor-less build, so that the client
    // API's reflection does not list it.
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    std::fs::create_dir_all(out_dir.join("raft"))?;
    tonic_prost_build::configure()
        .bytes(".")
        // Forwarded group requests carry the client API's messages: its generated types.
        .extern_path(".strata.v1", "crate::proto")
        // In a directory of its own: protoc hands it the imported client API too.
        .out_dir(out_dir.join("raft"))
        .compile_with_config(config, &["proto/strata/raft/v1/raft.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
