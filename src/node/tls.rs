//! TLS and mTLS for the data plane (rustls 0.23, ring), built from the `tls` key of the client and
//! server config dicts (docs/protocol.md "Transport").
//!
//! The handshake is done here rather than through tonic's TLS options because the configuration
//! asks for things tonic does not expose: a single enabled TLS version, `insecure_skip_verify`, and
//! PEM material given inline.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{BoxFuture, Service, http};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

use super::NodeError;
use super::config::{ClientConfig, ClientTlsConfig, ServerTlsConfig, TlsVersion};

/// How long a client may take to finish the TLS handshake with our server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_err(what: impl std::fmt::Display) -> NodeError {
    NodeError::Tls(what.to_string())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

static ONLY_TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static ONLY_TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

fn versions(v: TlsVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match v {
        TlsVersion::Tls13 => &ONLY_TLS13,
        TlsVersion::Tls12 => &ONLY_TLS12,
    }
}

/// PEM text from an inline value or a file (inline wins).
fn pem_source(inline: &Option<String>, file: &Option<String>, what: &str) -> Result<Option<Vec<u8>>, NodeError> {
    if let Some(pem) = inline {
        return Ok(Some(pem.as_bytes().to_vec()));
    }
    match file {
        Some(path) => std::fs::read(path).map(Some).map_err(|e| tls_err(format!("cannot read {what} `{path}`: {e}"))),
        None => Ok(None),
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, NodeError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &pem[..]).collect();
    let certs = certs.map_err(|e| tls_err(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{what}: no certificate found in PEM")));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, NodeError> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| tls_err(format!("{what}: {e}")))?
        .ok_or_else(|| tls_err(format!("{what}: no private key found in PEM")))
}

fn roots_from(pem: &[u8], what: &str) -> Result<RootCertStore, NodeError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem, what)? {
        roots.add(cert).map_err(|e| tls_err(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// Certificate + key pair, both optional but only valid together.
fn identity(
    cert_pem: &Option<String>,
    cert_file: &Option<String>,
    key_pem: &Option<String>,
    key_file: &Option<String>,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, NodeError> {
    let cert = pem_source(cert_pem, cert_file, "certificate")?;
    let key = pem_source(key_pem, key_file, "key")?;
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((parse_certs(&c, "certificate")?, parse_key(&k, "key")?))),
        (None, None) => Ok(None),
        _ => Err(tls_err("a certificate needs its key (cert_* and key_* go together)")),
    }
}

// ---------------------------------------------------------------------------------------------
// Server

/// The rustls acceptor for a server config (`tls.insecure == false`).
pub(super) fn server_acceptor(cfg: &ServerTlsConfig) -> Result<TlsAcceptor, NodeError> {
    let (certs, key) = identity(&cfg.cert_pem, &cfg.cert_file, &cfg.key_pem, &cfg.key_file)?
        .ok_or_else(|| tls_err("server TLS needs cert_file/cert_pem and key_file/key_pem (or tls.insecure: true)"))?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(cfg.tls_version))
        .map_err(tls_err)?;
    let builder = match pem_source(&cfg.client_ca_pem, &cfg.client_ca_file, "client CA")? {
        Some(pem) => {
            let roots = Arc::new(roots_from(&pem, "client CA")?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider).build().map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(tls_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A server-side TLS stream that tells tonic the peer address.
pub(crate) struct ServerTlsStream(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for ServerTlsStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for ServerTlsStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTlsStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop; failed handshakes are
/// logged and never reach the gRPC server.
pub(super) fn incoming(
    listener: Arc<super::listener::Listener>,
    acceptor: TlsAcceptor,
    cancel: CancellationToken,
) -> ReceiverStream<Result<ServerTlsStream, io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => r,
            };
            let (tcp, peer) = match accepted {
                None => break,
                Some(Ok(x)) => x,
                Some(Err(e)) => {
                    debug!(error = %e, "accept failed");
                    // Out of descriptors and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(ServerTlsStream(stream))).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

// ---------------------------------------------------------------------------------------------
// Client

/// Accepts any server certificate (`insecure_skip_verify`) but still checks handshake signatures.
#[derive(Debug)]
struct SkipServerVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_rustls(cfg: &ClientTlsConfig) -> Result<rustls::ClientConfig, NodeError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(cfg.tls_version))
        .map_err(tls_err)?;
    let builder = if cfg.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(SkipServerVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if cfg.include_system_ca_certs_pool.unwrap_or(true) {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if let Some(pem) = pem_source(&cfg.ca_pem, &cfg.ca_file, "CA")? {
            for cert in parse_certs(&pem, "CA")? {
                roots.add(cert).map_err(|e| tls_err(format!("CA: {e}")))?;
            }
        }
        if roots.is_empty() {
            return Err(tls_err("no trusted roots: set ca_file/ca_pem or include_system_ca_certs_pool"));
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match identity(&cfg.cert_pem, &cfg.cert_file, &cfg.key_pem, &cfg.key_file)? {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Dials TCP (no Nagle) and runs the TLS handshake; tonic then speaks HTTP/2 over it.
#[derive(Clone)]
pub(super) struct TlsDialer {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    addr: String,
}

impl Service<http::Uri> for TlsDialer {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = TcpStream::connect(&this.addr).await?;
            tcp.set_nodelay(true)?;
            let tls = this.connector.connect(this.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// For a TLS client: the `http://host:port` URI tonic should use (TLS is done by the dialer) and
/// the dialer itself.
pub(super) fn client_dialer(cfg: &ClientConfig) -> Result<(String, TlsDialer), NodeError> {
    let uri: http::Uri = cfg.endpoint.parse().map_err(tls_err)?;
    let host = uri.host().ok_or_else(|| tls_err("endpoint has no host"))?;
    let port = uri.port_u16().unwrap_or(443);
    let bare_host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let server_name = ServerName::try_from(bare_host).map_err(|e| tls_err(format!("server name `{host}`: {e}")))?;
    let config = client_rustls(&cfg.tls)?;
    let dialer =
        TlsDialer { connector: TlsConnector::from(Arc::new(config)), server_name, addr: format!("{host}:{port}") };
    Ok((format!("http://{host}:{port}"), dialer))
}
