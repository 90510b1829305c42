//! Under TLS a client that completes the handshake and then never sends the HTTP/2 preface is
//! closed after the handshake timeout like a silent plaintext one, and frees its connection slot:
//! its ClientHello is not a preface (the real broker with `--tls-cert`, a rustls client).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::Server;
use common::tls::Ca;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::{sync::Arc, time::Duration};
use strata::client::{self, Admin, ConnectOptions, TopicSettings};
use tokio::{io::AsyncReadExt, net::TcpStream};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_speaks_http2_is_closed_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let ca = Ca::new(pki.path(), "ca");
    let cert = ca.server(pki.path(), "broker");
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
            "--max-connections",
            "2",
            "--handshake-timeout",
            "300ms",
        ],
    );
    let https = format!("https://{}", server.addr);
    let options = ConnectOptions {
        tls_ca: Some(ca.cert.clone()),
        ..ConnectOptions::default()
    };
    let first = client::connect_with(&https, &options).await.unwrap();
    Admin::new(first.clone())
        .create_topic("t", 1, &TopicSettings::default())
        .await
        .unwrap();

    // The second slot: a finished TLS handshake, then silence.
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca.cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        // The broker's own HTTP/2 settings come unasked; then the end.
        while let Ok(n) = idle.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a TLS connection that never sent the HTTP/2 preface was not closed"
    );

    // Its slot is free again: a new client is served (with it held, the limit would refuse it).
    let second = client::connect_with(&https, &options).await.unwrap();
    let described = Admin::new(second).describe_topic("t").await.unwrap();
    assert_eq!(described.partitions.len(), 1);
    Admin::new(first).describe_topic("t").await.unwrap();
    drop(idle);
    assert!(server.terminate().await.success());
}
