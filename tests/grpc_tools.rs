//! Stock gRPC tooling against the real binary: `buf curl` (from npm's `@bufbuild/buf`, a
//! packaged Go build) lists services and methods and calls CreateTopic, Produce and Fetch with
//! JSON bodies, over server reflection v1alpha (what grpcurl 1.8.x and several GUI clients speak
//! only) and v1. The tool is taken from `STRATA_BUF`, else `target/grpc-tools/` (installed there
//! with npm when missing; `.ci/run` installs it first).

mod common;

use common::Server;
use std::{
    path::PathBuf,
    process::{Command, Output},
};

const BUF_VERSION: &str = "1.75.0";

/// The `buf` binary, installed into `target/grpc-tools` with npm if it is not there yet.
fn buf() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_BUF") {
        return path.into();
    }
    let prefix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/grpc-tools");
    let bin = prefix.join("node_modules/.bin/buf");
    if !bin.exists() {
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("@bufbuild/buf@{BUF_VERSION}"))
            .status()
            .expect("run npm (Node.js) to install @bufbuild/buf");
        assert!(status.success(), "npm install @bufbuild/buf failed");
    }
    bin
}

fn curl(buf: &PathBuf, reflect: &str, args: &[&str]) -> Output {
    Command::new(buf)
        .args(["curl", "--protocol", "grpc", "--http2-prior-knowledge"])
        .args(["--reflect-protocol", reflect])
        .args(args)
        .output()
        .expect("run buf curl")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "buf curl failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

#[test]
fn buf_curl_lists_describes_and_calls_over_both_reflection_versions() {
    let buf = buf();
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);

    for reflect in ["grpc-v1alpha", "grpc-v1"] {
        let services = ok(&curl(&buf, reflect, &["--list-services", &url]));
        assert!(
            services.lines().any(|l| l == "strata.v1.Strata"),
            "{reflect}: {services}"
        );
        assert!(
            services.contains("grpc.health.v1.Health"),
            "{reflect}: {services}"
        );
        let methods = ok(&curl(&buf, reflect, &["--list-methods", &url]));
        for m in [
            "strata.v1.Strata/Produce",
            "strata.v1.Strata/Fetch",
            "strata.v1.Strata/Subscribe",
        ] {
            assert!(methods.lines().any(|l| l == m), "{reflect}: {methods}");
        }
    }

    // Calls with JSON bodies, the schema read over v1alpha.
    let call = |method: &str, body: &str| {
        let out = curl(
            &buf,
            "grpc-v1alpha",
            &["-d", body, &format!("{url}/strata.v1.Strata/{method}")],
        );
        let text = ok(&out);
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {text}"))
    };
    let created = call("CreateTopic", r#"{"name": "signups", "partitions": 1}"#);
    assert_eq!(created["topic"]["name"], "signups", "{created}");
    // bytes are base64 in protobuf's JSON mapping: "hello" and "world".
    let produced = call(
        "Produce",
        r#"{"topic": "signups", "partition": 0, "records": [{"value": "aGVsbG8="}, {"key": "dTE=", "value": "d29ybGQ="}]}"#,
    );
    assert_eq!(produced["results"][0]["recordCount"], 2, "{produced}");
    let fetched = call(
        "Fetch",
        r#"{"topic": "signups", "partition": 0, "decode": true}"#,
    );
    let records = fetched["records"].as_array().expect("records");
    let values: Vec<&str> = records.iter().filter_map(|r| r["value"].as_str()).collect();
    assert_eq!(values, ["aGVsbG8=", "d29ybGQ="], "{fetched}");
    assert_eq!(records[1]["key"], "dTE=", "{fetched}");
    assert_eq!(records[1]["offset"], "1", "{fetched}");

    // An error comes back as its gRPC code.
    let missing = curl(
        &buf,
        "grpc-v1alpha",
        &[
            "-d",
            r#"{"topic": "nope"}"#,
            &format!("{url}/strata.v1.Strata/Fetch"),
        ],
    );
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("not_found") || stderr.contains("NotFound"),
        "{stderr}"
    );
}
