use std::sync::Arc;

use mezzo_proto::security::csr::new_key_and_request;
use mezzo_proto::security::{Credentials, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn principal(s: &str) -> Principal {
    s.parse().expect("principal")
}

fn creds(ca: &Authority, who: &str, validity: Duration) -> Credentials {
    let (issued, key) = ca
        .issue_with_key(&principal(who), &["127.0.0.1".into()], validity)
        .expect("issue");
    Credentials::new(ca.cert_pem())
        .expect("ca")
        .with_identity(Identity::from_pem(&issued.cert_pem, &key).expect("identity"))
}

/// One TLS handshake over loopback: the server's view of the client's
/// principal, or the error either side saw.
async fn handshake(server: &Credentials, client: &Credentials, expect: &str) -> Result<Option<String>, String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(server.server_config().map_err(|e| e.to_string())?);
    let srv = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| Principal::from_certificate(c).map(|p| p.to_string()))
            .transpose()
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let connector = TlsConnector::from(client.client_config(expect).map_err(|e| e.to_string())?);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let client_side = async {
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(())
    };
    let c = client_side.await;
    let s = srv.await.map_err(|e| e.to_string())?;
    c?;
    s
}

#[tokio::test]
async fn both_sides_are_verified_and_the_client_is_named() {
    let ca = Authority::generate().expect("ca");
    let master = creds(&ca, "master:127.0.0.1:5050", LEAF_VALIDITY);
    let admin = creds(&ca, "user:admin", LEAF_VALIDITY);
    assert_eq!(
        handshake(&master, &admin, MASTER_DNS_NAME).await,
        Ok(Some("user:admin".into()))
    );
    // A client with only the CA (a token holder) gets through TLS unnamed.
    let anonymous = Credentials::new(ca.cert_pem()).expect("ca");
    assert_eq!(handshake(&master, &anonymous, MASTER_DNS_NAME).await, Ok(None));
}

#[tokio::test]
async fn a_foreign_ca_an_expired_certificate_or_the_wrong_server_kind_is_refused() {
    let ca = Authority::generate().expect("ca");
    let other = Authority::generate().expect("other ca");
    let master = creds(&ca, "master:127.0.0.1:5050", LEAF_VALIDITY);
    let stranger = creds(&other, "user:admin", LEAF_VALIDITY);
    // The stranger trusts its own CA, so it refuses our master too; with
    // our CA trusted but its own certificate, the master refuses it.
    assert!(handshake(&master, &stranger, MASTER_DNS_NAME).await.is_err());
    let (issued, key) = other
        .issue_with_key(&principal("user:admin"), &[], LEAF_VALIDITY)
        .expect("issue");
    let forged = Credentials::new(ca.cert_pem())
        .expect("ca")
        .with_identity(Identity::from_pem(&issued.cert_pem, &key).expect("id"));
    assert!(handshake(&master, &forged, MASTER_DNS_NAME).await.is_err());
    let expired = creds(&ca, "user:admin", Duration::ZERO);
    assert!(handshake(&master, &expired, MASTER_DNS_NAME).await.is_err());
    // An agent's certificate does not pass for a master's.
    let agent = creds(&ca, "agent:node-1", LEAF_VALIDITY);
    let admin = creds(&ca, "user:admin", LEAF_VALIDITY);
    assert!(handshake(&agent, &admin, MASTER_DNS_NAME).await.is_err());
    assert_eq!(
        handshake(&agent, &admin, "node-1.agent.mezzo").await,
        Ok(Some("user:admin".into()))
    );
}

#[test]
fn a_request_gives_only_its_key_the_ca_decides_the_name() {
    let ca = Authority::generate().expect("ca");
    let (key, csr) = new_key_and_request().expect("csr");
    let issued = ca
        .issue(&principal("agent:node-2"), &csr, &["10.0.0.9".into()], LEAF_VALIDITY)
        .expect("issue");
    assert_eq!(issued.info.principal.to_string(), "agent:node-2");
    let id = Identity::from_pem(&issued.cert_pem, &key).expect("matching key");
    assert_eq!(id.principal().to_string(), "agent:node-2");
    assert!(
        ca.issue(&principal("agent:x"), "not a csr", &[], LEAF_VALIDITY)
            .is_err()
    );
}

#[test]
fn the_ca_is_created_once_and_found_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let (a, created) = Authority::load_or_create(&pki).expect("create");
    assert!(created);
    let (b, created) = Authority::load_or_create(&pki).expect("load");
    assert!(!created);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.data_key(), b.data_key());
    use std::os::unix::fs::PermissionsExt;
    let mode = |f: &str| std::fs::metadata(pki.join(f)).expect("meta").permissions().mode() & 0o777;
    assert_eq!((mode("ca.key"), mode("data.key")), (0o600, 0o600));
    std::fs::write(pki.join("data.key"), "zz").expect("write");
    assert!(matches!(Authority::load(&pki), Err(PkiError::Invalid { .. })));
}

#[test]
fn serials_are_unique_and_fixed_length() {
    let ca = Authority::generate().expect("ca");
    let a = ca
        .issue_with_key(&principal("user:a"), &[], LEAF_VALIDITY)
        .expect("a")
        .0;
    let b = ca
        .issue_with_key(&principal("user:a"), &[], LEAF_VALIDITY)
        .expect("b")
        .0;
    assert_ne!(a.info.serial, b.info.serial);
    assert_eq!(a.info.serial.len(), 32);
    let _ = Arc::new(a);
}

/// A master serves its peers' connections on the Raft node's own runtime
/// (`ServeOptions::dedicated`): a request over a master's certificate is
/// answered on that runtime's thread, one over a user's on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_of_the_dedicated_kind_are_served_on_their_runtime() {
    use mezzo_proto::security::serve::{ServeOptions, serve};
    use mezzo_proto::security::{Kind, Transport, https};

    let ca = Authority::generate().expect("ca");
    let server = creds(&ca, "master:127.0.0.1:5050", Duration::from_secs(3600));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dedicated".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            handle_tx.send(rt.handle().clone()).expect("send handle");
            rt.block_on(async move {
                let _ = stopped.await;
            });
        })
        .expect("thread");
    let dedicated = handle_rx.recv().expect("handle");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut opts = ServeOptions::new(Some(server.server_config().expect("server config")));
    opts.dedicated = Some((Kind::Master, dedicated));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { std::thread::current().name().unwrap_or_default().to_owned() }),
    );
    let serving = tokio::spawn(serve(listener, opts, app));
    let served_on = |who: &'static str| {
        let transport = Transport::Tls(creds(&ca, who, Duration::from_secs(3600)));
        async move {
            let http = https::client(&transport, MASTER_DNS_NAME, Duration::from_secs(10)).expect("client");
            let mut names = Vec::new();
            // Several requests on the one connection, all on one side.
            for _ in 0..3 {
                let r = http.get(format!("https://{addr}/")).send().await.expect("request");
                names.push(r.text().await.expect("body"));
            }
            names
        }
    };
    assert_eq!(served_on("master:127.0.0.1:5051").await, ["dedicated"; 3]);
    let user = served_on("user:ops").await;
    assert!(user.iter().all(|n| n != "dedicated"), "{user:?}");
    serving.abort();
    let _ = stop.send(());
    thread.join().expect("join");
}
