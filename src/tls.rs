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
/// SNI, or the certificates `tls intercept` issues. Compared by identity (a reload
/// builds a new one).
#[derive(Clone)]
pub struct Server {
    config: Arc<ServerConfig>,
    /// For data connections: the same certificates and session cache, no tickets.
    data: Arc<ServerConfig>,
}

/// Stateless tickets: FTPS clients resume their control connection's session on every
/// data connection with the one ticket they hold, which rustls's stateful TLS 1.3
/// tickets allow only once. The key rotates every few hours.
fn ticketer() -> Result<Arc<dyn rustls::server::ProducesTickets>, String> {
    rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))
}

impl Server {
    /// `certs`, in the rule file's order, chosen by SNI. `None` without any.
    pub fn new(certs: &[Certified]) -> Result<Option<Server>, String> {
        let keys: Vec<Arc<CertifiedKey>> = certs.iter().map(|c| c.0.clone()).collect();
        if keys.is_empty() {
            return Ok(None);
        }
        Server::with(Arc::new(BySni { keys }), ticketer()?).map(Some)
    }

    /// Certificates from `resolver`, tickets from `ticketer`.
    fn with(
        resolver: Arc<dyn ResolvesServerCert>,
        ticketer: Arc<dyn rustls::server::ProducesTickets>,
    ) -> Result<Server, String> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.ticketer = ticketer;
        // A data connection resumes the control connection's session, with the same
        // ticket key; it gets no tickets of its own. A TLS 1.3 ticket is sent after the
        // handshake, and an uploading client never reads it: closing its socket with
        // the ticket unread, it resets the connection, and the kernel drops the end
        // of the upload still unread on ftpgate's side (lftp did, every time).
        let mut data = config.clone();
        data.send_tls13_tickets = 0;
        Ok(Server {
            config: Arc::new(config),
            data: Arc::new(data),
        })
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

/// `tls intercept ca FILE key FILE`: on an edge in front of clients, ftpgate presents
/// each FTPS client a certificate for the server it asked for (its SNI name, else the
/// server's address), issued on the spot and signed by the operator's CA, as
/// TLS-inspecting firewalls do; the clients trust that CA. Issued certificates are
/// kept for reuse. Compared by identity.
#[derive(Clone)]
pub struct Interceptor(Arc<Issuing>);

struct Issuing {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca: CertificateDer<'static>,
    /// Issued certificates by name, with when they were issued.
    issued: std::sync::Mutex<
        std::collections::HashMap<String, (std::time::Instant, Arc<CertifiedKey>)>,
    >,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
}

/// Issued certificates kept at most; past it the cache starts afresh (a name is
/// issued again in well under a millisecond).
const MAX_ISSUED: usize = 4096;
/// An issued certificate is valid from a day before it was issued (clocks differ) for
/// this long, and issued anew once half of it has passed.
const ISSUED_VALIDITY: time::Duration = time::Duration::days(14);

impl Interceptor {
    /// The operator's CA certificate and its key, from PEM. The error says what is
    /// wrong with which.
    pub fn from_pem(ca_pem: &[u8], key_pem: &[u8]) -> Result<Interceptor, String> {
        let ca = CertificateDer::pem_slice_iter(ca_pem)
            .next()
            .ok_or("the CA file holds no CERTIFICATE")?
            .map_err(|e| format!("the CA file is not PEM: {e}"))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&ca)
            .map_err(|e| format!("the CA file's certificate cannot be read: {e}"))?;
        if !parsed.is_ca() {
            return Err("the certificate is no CA (basicConstraints CA:TRUE)".into());
        }
        let key_pem = std::str::from_utf8(key_pem).map_err(|_| "the key file is not PEM")?;
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| {
            format!("the key file holds no PKCS#8 private key ring can sign with: {e}")
        })?;
        if key.public_key_raw() != &parsed.public_key().subject_public_key.data[..] {
            return Err("the key does not belong to the CA certificate".into());
        }
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca, key)
            .map_err(|e| format!("the CA certificate cannot issue: {e}"))?;
        Ok(Interceptor(Arc::new(Issuing {
            issuer,
            ca: ca.into_owned(),
            issued: std::sync::Mutex::new(std::collections::HashMap::new()),
            ticketer: ticketer()?,
        })))
    }

    /// ftpgate's TLS toward one intercepted client whose server is at `address`.
    pub fn server_for(&self, address: std::net::IpAddr) -> Result<Server, String> {
        let resolver = Arc::new(Issue {
            interceptor: self.clone(),
            address,
        });
        Server::with(resolver, self.0.ticketer.clone())
    }

    /// A certificate for `name` (a DNS name or an address), from the cache or new.
    pub fn issue(&self, name: &str) -> Result<Arc<CertifiedKey>, String> {
        let fresh = std::time::Duration::try_from(ISSUED_VALIDITY / 2).unwrap_or_default();
        {
            let issued = self.0.issued.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, key)) = issued.get(name).filter(|(at, _)| at.elapsed() < fresh) {
                return Ok(key.clone());
            }
        }
        let key = Arc::new(self.sign(name)?);
        let mut issued = self.0.issued.lock().unwrap_or_else(|e| e.into_inner());
        if issued.len() >= MAX_ISSUED {
            issued.clear();
        }
        issued.insert(name.to_string(), (std::time::Instant::now(), key.clone()));
        Ok(key)
    }

    fn sign(&self, name: &str) -> Result<CertifiedKey, String> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
            .map_err(|e| format!("no certificate for {name}: {e}"))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + ISSUED_VALIDITY;
        params.use_authority_key_identifier_extension = true;
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let key = rcgen::KeyPair::generate().map_err(|e| format!("key for {name}: {e}"))?;
        let cert = params
            .signed_by(&key, &self.0.issuer)
            .map_err(|e| format!("certificate for {name}: {e}"))?;
        let chain = vec![cert.der().clone(), self.0.ca.clone()];
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        CertifiedKey::from_der(chain, key, &provider())
            .map_err(|e| format!("certificate for {name}: {e}"))
    }
}

impl fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tls::Interceptor")
    }
}

impl PartialEq for Interceptor {
    fn eq(&self, other: &Interceptor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Interceptor {}

/// The resolver of one intercepted session: the client's SNI name, else the address
/// of the server it connected to.
#[derive(Debug)]
struct Issue {
    interceptor: Interceptor,
    address: std::net::IpAddr,
}

impl ResolvesServerCert for Issue {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello
            .server_name()
            .map_or_else(|| self.address.to_string(), str::to_string);
        self.interceptor
            .issue(&name)
            .inspect_err(|e| tracing::warn!(%name, error = %e, "cannot issue a certificate"))
            .ok()
    }
}

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

    /// A CA certificate and its key, PEM.
    fn ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "edge inspection CA");
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A full handshake in memory: a client that trusts `ca` asks `server` for `name`.
    fn handshake(server: &Server, ca: &str, name: &str) -> Result<(), rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(
            CertificateDer::pem_slice_iter(ca.as_bytes()).map(Result::unwrap),
        );
        let client = Connector::verifying(roots).unwrap().for_session();
        let mut client = rustls::ClientConnection::new(client, server_name(name).unwrap())?;
        let mut server = server.accept()?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets()?;
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn intercepted_clients_get_a_certificate_for_the_name_they_ask_for_signed_by_the_ca() {
        let (ca_pem, key_pem) = ca();
        let interceptor = Interceptor::from_pem(ca_pem.as_bytes(), key_pem.as_bytes()).unwrap();
        let server = interceptor
            .server_for("203.0.113.2".parse().unwrap())
            .unwrap();
        handshake(&server, &ca_pem, "ftp.example.net").unwrap();
        // No SNI (an address is never sent as one): the server's address.
        handshake(&server, &ca_pem, "203.0.113.2").unwrap();
        // Issued once, then reused.
        let a = interceptor.issue("ftp.example.net").unwrap();
        let b = interceptor.issue("ftp.example.net").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // A client that does not trust the operator's CA refuses it.
        let (other, _) = ca();
        let e = handshake(&server, &other, "ftp.example.net").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(_)), "{e}");
    }

    #[test]
    fn an_interception_ca_must_be_a_ca_with_its_own_key() {
        let (ca_pem, key_pem) = ca();
        let (_, other_key) = ca();
        let e = Interceptor::from_pem(ca_pem.as_bytes(), other_key.as_bytes()).unwrap_err();
        assert!(e.contains("does not belong"), "{e}");
        let (leaf, leaf_key) = pair(&["ftp.example.net"]);
        let e = Interceptor::from_pem(leaf.as_bytes(), leaf_key.as_bytes()).unwrap_err();
        assert!(e.contains("no CA"), "{e}");
        let e = Interceptor::from_pem(b"nothing", key_pem.as_bytes()).unwrap_err();
        assert!(e.contains("CA file"), "{e}");
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
