//! TLS for the FTPS tests: a CA and a certificate it signed, generated per test, and
//! what the tests check with them.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::metric_value;

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
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn pki(dir: &Path) -> Pki {
    pki_for(dir, "127.0.0.1")
}

pub fn pki_for(dir: &Path, ip: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ftpgate test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec![ip.to_string(), "localhost".to_string()])
        .expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let pki = Pki {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.ca, ca.pem()).expect("write CA");
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
