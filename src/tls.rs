//! TLS for FTPS (RFC 4217): ftpgate's certificates (`tls cert FILE key FILE`), the
//! server side of a client's connections, and the client side of a server's
//! (`tls server`). rustls with the *ring* provider; no
//! OpenSSL. Pure: bytes in, configurations out; the driver moves the records.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its key as the rules checked them, loaded once and shared
/// by every configuration built from those rules. Compared by identity.
#[derive(Clone)]
pub struct Certified(Arc<CertifiedKey>);

impl Certified {
    /// From PEM: see [`certified_key`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Certified, String> {
        certified_key(cert_pem, key_pem).map(|key| Certified(Arc::new(key)))
    }
}

impl fmt::Debug for Certified {
    // The key stays out of every log and test failure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls::Certified")
    }
}

impl PartialEq for Certified {
    fn eq(&self, other: &Certified) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Certified {}

/// A certificate chain (leaf first) and its private key, from PEM, checked to belong
/// together. The error says what is wrong with which of the two.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no private key: {e}"))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "the key does not belong to the certificate".into(),
        e => format!("the certificate or key cannot be used: {e}"),
    })
}

/// When the leaf certificate of `cert_pem` stops being valid, in Unix seconds.
pub fn not_after(cert_pem: &[u8]) -> Option<i64> {
    let leaf = CertificateDer::pem_slice_iter(cert_pem).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Picks the certificate for a client's SNI name: the first whose leaf is valid for
/// it, else the first of all (clients that send no name, or an address, get that).
#[derive(Debug)]
struct BySni {
    keys: Vec<Arc<CertifiedKey>>,
}

impl BySni {
    fn valid_for(key: &CertifiedKey, name: &ServerName<'_>) -> bool {
        key.end_entity_cert()
            .ok()
            .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
            .is_some_and(|cert| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok())
            .and_then(|name| self.keys.iter().find(|k| BySni::valid_for(k, &name)));
        named.or_else(|| self.keys.first()).cloned()
    }
}

/// What ftpgate presents to FTPS clients: every `tls cert` of the rule file, chosen by
/// SNI. Compared by identity (a reload builds a new one).
#[derive(Clone)]
pub struct Server {
    config: Arc<ServerConfig>,
    /// For data connections: the same certificates and session cache, no tickets.
    data: Arc<ServerConfig>,
}

impl Server {
    /// `certs`, in the rule file's order, chosen by SNI. `None` without any.
    pub fn new(certs: &[Certified]) -> Result<Option<Server>, String> {
        let keys: Vec<Arc<CertifiedKey>> = certs.iter().map(|c| c.0.clone()).collect();
        if keys.is_empty() {
            return Ok(None);
        }
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni { keys }));
        // Stateless tickets: FTPS clients resume their control connection's session
        // on every data connection with the one ticket they hold, which rustls's
        // stateful TLS 1.3 tickets allow only once. The key rotates every few hours.
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
        // A data connection resumes the control connection's session, with the same
        // ticket key; it gets no tickets of its own. A TLS 1.3 ticket is sent after the
        // handshake, and an uploading client never reads it: closing its socket with
        // the ticket unread, it resets the connection, and the kernel drops the end
        // of the upload still unread on ftpgate's side (lftp did, every time).
        let mut data = config.clone();
        data.send_tls13_tickets = 0;
        Ok(Some(Server {
            config: Arc::new(config),
            data: Arc::new(data),
        }))
    }

    /// The server side of one client's control connection, after its `234`.
    pub fn accept(&self) -> Result<rustls::ServerConnection, rustls::Error> {
        rustls::ServerConnection::new(self.config.clone())
    }

    /// The server side of a client's data connections (`PROT P`), with the same
    /// certificates and the same session cache, so a client may resume its control
    /// connection's TLS session on them, as RFC 4217 clients do.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.data.clone())
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls::Server")
    }
}

impl PartialEq for Server {
    fn eq(&self, other: &Server) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for Server {}

/// ftpgate as the TLS client of FTP servers (`tls server …`): what their certificates
/// are checked against. Compared by identity (a reload builds a new one).
#[derive(Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
}

impl Connector {
    /// Checks servers' certificates against `roots` and the name ftpgate dialed.
    pub fn verifying(roots: RootCertStore) -> Result<Connector, String> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector::from(config))
    }

    /// Takes any certificate (`no-verify`); the handshake's signatures are still
    /// checked, so the server holds the key of the certificate it sent.
    pub fn unverified() -> Result<Connector, String> {
        let provider = provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Connector::from(config))
    }

    /// The configuration for one session's connections to its server: its own
    /// session cache, so that its data connections resume its control connection's
    /// TLS session (vsftpd's `require_ssl_reuse`) and no other session's.
    pub fn for_session(&self) -> Arc<ClientConfig> {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(16);
        Arc::new(config)
    }
}

impl From<ClientConfig> for Connector {
    fn from(config: ClientConfig) -> Connector {
        Connector {
            config: Arc::new(config),
        }
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls::Connector")
    }
}

impl PartialEq for Connector {
    fn eq(&self, other: &Connector) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for Connector {}

/// The CA certificates of a PEM file (`tls server … ca FILE`).
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA file is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("the CA file holds no CERTIFICATE".into());
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("the CA file holds a certificate that cannot be used: {e}"))?;
    }
    Ok(roots)
}

/// The system's CA store (`ca system`): Debian's `ca-certificates`, or wherever
/// `SSL_CERT_FILE`/`SSL_CERT_DIR` point.
pub fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "it is empty".to_string(), ToString::to_string);
        return Err(format!(
            "the system's CA store cannot be read ({why}): install ca-certificates, or \
             name a CA file with `ca FILE`"
        ));
    }
    Ok(roots)
}

/// The name a server's certificate must be valid for: the host as the rules or the
/// client named it (a DNS name or an address).
pub fn server_name(host: &str) -> Option<ServerName<'static>> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).ok()
}

/// `no-verify`: every certificate is taken; the signatures of the handshake are
/// checked as usual.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The negotiated version and cipher suite of a finished handshake, for the session
/// table and logs: `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
pub fn describe(conn: &rustls::CommonState) -> Option<(String, String)> {
    let version = conn.protocol_version()?;
    let suite = conn.negotiated_cipher_suite()?;
    let version = match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    };
    let suite = suite
        .suite()
        .as_str()
        .map_or_else(|| format!("{:?}", suite.suite()), str::to_string);
    Some((version, suite))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn the_leafs_end_of_validity_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 6);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        // 2031-05-06T00:00:00Z
        assert_eq!(not_after(cert.pem().as_bytes()), Some(1_935_792_000));
        assert_eq!(not_after(b"no PEM"), None);
    }

    #[test]
    fn a_certificate_and_its_own_key_are_accepted() {
        let (cert, key) = pair(&["ftp.example.net"]);
        assert!(certified_key(cert.as_bytes(), key.as_bytes()).is_ok());
    }

    #[test]
    fn another_certificates_key_is_refused_and_says_so() {
        let (cert, _) = pair(&["ftp.example.net"]);
        let (_, other) = pair(&["ftp.example.net"]);
        let e = certified_key(cert.as_bytes(), other.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
    }

    #[test]
    fn a_file_without_pem_is_refused_and_says_which() {
        let (cert, key) = pair(&["ftp.example.net"]);
        let e = certified_key(b"hello", key.as_bytes()).unwrap_err();
        assert!(e.contains("certificate file"), "{e}");
        let e = certified_key(cert.as_bytes(), cert.as_bytes()).unwrap_err();
        assert!(e.contains("key file"), "{e}");
    }

    #[test]
    fn sni_picks_the_certificate_valid_for_the_name_else_the_first() {
        let (a, ak) = pair(&["a.example.net"]);
        let (b, bk) = pair(&["b.example.net", "*.b.example.org"]);
        let keys: Vec<Arc<CertifiedKey>> = [(a, ak), (b, bk)]
            .iter()
            .map(|(c, k)| Arc::new(certified_key(c.as_bytes(), k.as_bytes()).unwrap()))
            .collect();
        let leaf = |k: &CertifiedKey| k.end_entity_cert().unwrap().to_vec();
        let by = BySni { keys: keys.clone() };
        let valid = |name: &str| {
            let name = ServerName::try_from(name.to_string()).unwrap();
            by.keys
                .iter()
                .find(|k| BySni::valid_for(k, &name))
                .map(|k| leaf(k))
        };
        assert_eq!(valid("b.example.net"), Some(leaf(&keys[1])));
        assert_eq!(valid("x.b.example.org"), Some(leaf(&keys[1])));
        assert_eq!(valid("a.example.net"), Some(leaf(&keys[0])));
        assert_eq!(valid("c.example.net"), None);
    }
}
