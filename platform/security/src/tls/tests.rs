//! Handshakes over loopback between the configurations of this module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::test_ca::TestCa;
use super::*;

/// A server that answers each client with the service its certificate names, and reports what
/// each handshake came to.
async fn serve(
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (outcomes, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let outcomes = outcomes.clone();
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        let peer = tls.get_ref().1.peer_certificates().and_then(peer_identity);
                        let name = peer.map_or_else(|| "nobody".to_owned(), |p| p.service().to_owned());
                        let _ = tls.write_all(name.as_bytes()).await;
                        let _ = tls.shutdown().await;
                        let _ = outcomes.send(Ok(name));
                    }
                    Err(e) => {
                        let _ = outcomes.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    (addr, received)
}

/// What the server said to a client, and the certificate the server presented.
async fn call(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<(String, Vec<u8>), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
        .map_err(|e| e.to_string())?;
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    Ok((answer, presented))
}

struct Pki {
    _dir: tempfile::TempDir,
    ca: TestCa,
    dir: std::path::PathBuf,
}

fn pki(services: &[&str]) -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    for service in services {
        ca.write(dir.path(), service);
    }
    Pki {
        dir: dir.path().to_owned(),
        _dir: dir,
        ca,
    }
}

#[tokio::test]
async fn a_client_with_a_certificate_from_the_ca_is_served_and_named() {
    let pki = pki(&["inventory", "orders"]);
    let (addr, mut outcomes) = serve(server_config(&TlsFiles::in_dir(&pki.dir, "inventory")).unwrap()).await;
    let (answer, _) = call(
        addr,
        client_config(&TlsFiles::in_dir(&pki.dir, "orders")).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(answer, "orders");
    assert_eq!(outcomes.recv().await.unwrap(), Ok("orders".to_owned()));
}

#[tokio::test]
async fn clients_without_a_certificate_or_with_one_from_another_ca_are_refused() {
    let ours = pki(&["inventory"]);
    let theirs = pki(&["orders"]);
    let (addr, mut outcomes) = serve(server_config(&TlsFiles::in_dir(&ours.dir, "inventory")).unwrap()).await;
    let trusting_ours = || {
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots(&ours.dir.join("ca.pem")).unwrap())
    };

    let anonymous = Arc::new(trusting_ours().with_no_client_auth());
    assert!(
        call(addr, anonymous).await.is_err(),
        "served a client without a certificate"
    );
    assert!(outcomes.recv().await.unwrap().is_err());

    let foreign = ReloadingCert::load(&TlsFiles::in_dir(&theirs.dir, "orders"), provider()).unwrap();
    let foreign = Arc::new(trusting_ours().with_client_cert_resolver(Arc::new(foreign)));
    assert!(
        call(addr, foreign).await.is_err(),
        "served a certificate of another CA"
    );
    let refused = outcomes.recv().await.unwrap().unwrap_err();
    assert!(refused.contains("invalid peer certificate"), "{refused}");
}

#[tokio::test]
async fn a_plaintext_client_is_refused() {
    let pki = pki(&["inventory"]);
    let (addr, mut outcomes) = serve(server_config(&TlsFiles::in_dir(&pki.dir, "inventory")).unwrap()).await;
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply).await;
    assert!(!reply.starts_with(b"HTTP/"), "answered in plaintext");
    assert!(outcomes.recv().await.unwrap().is_err());
}

#[tokio::test]
async fn a_rotated_certificate_is_presented_to_new_connections_and_none_fails_meanwhile() {
    let pki = pki(&["inventory", "orders"]);
    let (addr, _outcomes) = serve(server_config(&TlsFiles::in_dir(&pki.dir, "inventory")).unwrap()).await;
    let client = client_config(&TlsFiles::in_dir(&pki.dir, "orders")).unwrap();
    let (_, before) = call(addr, Arc::clone(&client)).await.unwrap();

    let renewed = pki.ca.rotate(&pki.dir, "inventory").to_vec();
    assert_ne!(renewed, before);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (answer, presented) = call(addr, Arc::clone(&client))
            .await
            .expect("a call during rotation failed");
        assert_eq!(answer, "orders");
        if presented == renewed {
            break;
        }
        assert_eq!(presented, before, "presented a certificate that is neither");
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never presented"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
    let pki = pki(&["inventory", "orders"]);
    let mut files = TlsFiles::in_dir(&pki.dir, "inventory");
    files.key = pki.dir.join("orders.key");
    assert!(matches!(server_config(&files), Err(TlsError::Rustls(_))));
}

#[tokio::test]
async fn a_client_for_one_service_refuses_the_certificate_of_another() {
    let pki = pki(&["inventory", "customers", "orders"]);
    let (addr, _outcomes) = serve(server_config(&TlsFiles::in_dir(&pki.dir, "customers")).unwrap()).await;
    let files = TlsFiles::in_dir(&pki.dir, "orders");
    let refused = call(addr, client_config_for(&files, "inventory").unwrap())
        .await
        .unwrap_err();
    assert!(
        refused.contains("WrongService") && refused.contains("spiffe://mercato/customers"),
        "{refused}"
    );
    let (answer, _) = call(addr, client_config_for(&files, "customers").unwrap())
        .await
        .unwrap();
    assert_eq!(answer, "orders");
}
