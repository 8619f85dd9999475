//! TLS for the FTPS tests: a CA and a certificate it signed, generated per test, and
//! what the tests check with them.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{Gate, Vsftpd, make_file, metric_value};

/// A vsftpd, the ftpgate in front of it, the certificates of either, and a directory
/// for what the clients fetch.
pub struct Setup {
    pub server: Vsftpd,
    pub gate: Gate,
    pub pki: Pki,
    /// Where the certificates are.
    pub dir: tempfile::TempDir,
    pub local: tempfile::TempDir,
}

impl Setup {
    /// A certificate for `ip` and its CA, the vsftpd `server` starts with them,
    /// serving `one.bin` (1 MiB), and the ftpgate `gate` starts in front of it.
    pub fn new(
        ip: &str,
        server: impl FnOnce(&Pki) -> Vsftpd,
        gate: impl FnOnce(&Vsftpd, &Pki) -> Gate,
    ) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = pki_for(dir.path(), ip);
        let server = server(&pki);
        make_file(&server.public().join("one.bin"), 1 << 20, 7);
        let gate = gate(&server, &pki);
        Setup {
            server,
            gate,
            pki,
            dir,
            local: tempfile::tempdir().expect("tempdir"),
        }
    }
}

/// What a command printed, both streams.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A CA, and a certificate it signed for 127.0.0.1 with its key, in `dir`.
pub struct Pki {
    pub ca: PathBuf,
    /// The CA's own key (PKCS#8), for `tls intercept`.
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
    pki_for(dir, "127.0.0.1")
}

pub fn pki_for(dir: &Path, ip: &str) -> Pki {
    pki_with(dir, &[ip, "localhost"])
}

/// A CA, and a certificate it signed for `names` (host names and addresses).
pub fn pki_with(dir: &Path, names: &[&str]) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ftpgate test CA");
    let ca_key_pem = ca_key.serialize_pem();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let params = rcgen::CertificateParams::new(names).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let pki = Pki {
        ca: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).expect("write CA");
    std::fs::write(&pki.ca_key, ca_key_pem).expect("write CA key");
    std::fs::write(&pki.cert, cert.pem()).expect("write cert");
    std::fs::write(&pki.key, key.serialize_pem()).expect("write key");
    pki
}

/// `ftpgate_tls_handshakes_total{leg, outcome}` in `metrics`.
pub fn handshakes(metrics: &str, leg: &str, outcome: &str) -> f64 {
    let sample = format!(r#"ftpgate_tls_handshakes_total{{leg="{leg}",outcome="{outcome}"}}"#);
    metric_value(metrics, &sample)
}

pub fn same_file(pa: &Path, pb: &Path) {
    let (a, b) = (
        std::fs::read(pa).expect("read"),
        std::fs::read(pb).expect("read"),
    );
    assert!(
        a.len() == b.len() && a == b,
        "{} ({} bytes) and {} ({} bytes) differ",
        pa.display(),
        a.len(),
        pb.display(),
        b.len()
    );
}
