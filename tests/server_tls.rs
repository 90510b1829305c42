//! TLS on the real broker, with certificates made at test time: a client that trusts the CA
//! produces and reads over https://; plaintext, an untrusted CA and (under mutual TLS) a missing
//! or foreign client certificate are refused; SIGHUP swaps the certificate without dropping an
//! open connection.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::Server;
use common::tls::Ca;
use std::path::Path;
use strata::client::{self, Admin, ClientError, ConnectOptions, TopicSettings};

fn trusting(ca: &Path) -> ConnectOptions {
    ConnectOptions {
        tls_ca: Some(ca.to_path_buf()),
        ..ConnectOptions::default()
    }
}

/// Creates a topic through `channel`: a call that needs a working connection.
async fn works(channel: client::Channel, topic: &str) -> Result<(), ClientError> {
    Admin::new(channel)
        .create_topic(topic, 1, &TopicSettings::default())
        .await
        .map(|_| ())
}

/// Connecting, or the first call, fails.
async fn refused(url: &str, options: &ConnectOptions, what: &str) {
    let result = match client::connect_with(url, options).await {
        Ok(channel) => works(channel, "never").await,
        Err(e) => Err(e),
    };
    assert!(result.is_err(), "{what}: the broker took it");
}

#[tokio::test]
async fn tls_and_mutual_tls_accept_only_what_they_trust() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let other_ca = Ca::new(pki.path(), "other");
    let server_cert = ca.server(pki.path(), "broker");
    let flags = [
        "--tls-cert",
        server_cert.cert.to_str().unwrap(),
        "--tls-key",
        server_cert.key.to_str().unwrap(),
    ];
    let server = Server::start_with(dir.path(), &flags);
    let https = format!("https://{}", server.addr);
    let http = format!("http://{}", server.addr);

    let channel = client::connect_with(&https, &trusting(&ca.cert))
        .await
        .unwrap();
    works(channel.clone(), "over-tls").await.unwrap();
    let described = Admin::new(channel)
        .describe_topic("over-tls")
        .await
        .unwrap();
    assert_eq!(described.partitions.len(), 1);
    // A host:port alone with TLS material is https.
    let bare = client::connect_with(&server.addr.to_string(), &trusting(&ca.cert))
        .await
        .unwrap();
    works(bare, "bare-address").await.unwrap();

    refused(&http, &ConnectOptions::default(), "plaintext").await;
    refused(
        &https,
        &trusting(&other_ca.cert),
        "a CA that did not sign it",
    )
    .await;
    refused(&https, &ConnectOptions::default(), "the system roots").await;
    drop(server);

    // Mutual TLS: a client certificate from the client CA is required.
    let clients = Ca::new(pki.path(), "clients");
    let alice = clients.client(pki.path(), "alice");
    let mallory = other_ca.client(pki.path(), "mallory");
    let mtls = [
        &flags[..],
        &["--tls-client-ca", clients.cert.to_str().unwrap()],
    ]
    .concat();
    let server = Server::start_with(dir.path(), &mtls);
    let https = format!("https://{}", server.addr);
    let as_alice = ConnectOptions {
        tls_ca: Some(ca.cert.clone()),
        tls_cert: Some(alice.cert.clone()),
        tls_key: Some(alice.key.clone()),
        ..ConnectOptions::default()
    };
    let channel = client::connect_with(&https, &as_alice).await.unwrap();
    works(channel, "mutual").await.unwrap();
    refused(&https, &trusting(&ca.cert), "no client certificate").await;
    let as_mallory = ConnectOptions {
        tls_ca: Some(ca.cert.clone()),
        tls_cert: Some(mallory.cert.clone()),
        tls_key: Some(mallory.key.clone()),
        ..ConnectOptions::default()
    };
    refused(&https, &as_mallory, "a client certificate of another CA").await;
}

#[tokio::test]
async fn sighup_swaps_the_certificate_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let old_ca = Ca::new(pki.path(), "old");
    let new_ca = Ca::new(pki.path(), "new");
    let live = pki.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let old = old_ca.server(&live, "broker");
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            old.cert.to_str().unwrap(),
            "--tls-key",
            old.key.to_str().unwrap(),
        ],
    );
    let https = format!("https://{}", server.addr);
    let open = client::connect_with(&https, &trusting(&old_ca.cert))
        .await
        .unwrap();
    works(open.clone(), "before").await.unwrap();

    // The same file names, now holding a certificate of the new CA.
    let _new = new_ca.server(&live, "broker");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    // New connections get the new certificate (the reload is asynchronous: poll for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let fresh = client::connect_with(&https, &trusting(&new_ca.cert)).await;
        if let Ok(channel) = fresh
            && works(channel, "after").await.is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    refused(
        &https,
        &trusting(&old_ca.cert),
        "the old CA after the reload",
    )
    .await;
    // The connection opened before the reload still works.
    works(open, "still-open").await.unwrap();
}
