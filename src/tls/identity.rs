//! The server's certificate and key: read from PEM files, checked, and handed to new handshakes.
//!
//! [`Identity::load`] refuses anything a client would refuse or that could not work: a file that
//! cannot be read, no certificate, no key or one ring cannot use, a key that is not the
//! certificate's, and a certificate in the chain outside its validity period. Every refusal is a
//! [`TlsFileError`] naming the key (`tls_cert_file` or `tls_key_file`) and the file.
//!
//! [`Current`] is what rustls asks for a certificate at each handshake. A reload swaps what it
//! holds: handshakes after the swap get the new certificate, connections already made keep the
//! session they have.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest PEM file read: a certificate chain or a key is a few KiB; this only keeps a path
/// pointing at something else (a log, a device) from being read whole.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A certificate that expires within this is loaded with a warning (certbot renews 30 days ahead,
/// so a certificate this close to its end means renewal is failing).
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// A TLS file that cannot be used, rendered as `tls_cert_file /etc/…/fullchain.pem: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {}: {reason}", path.display())]
pub struct TlsFileError {
    /// `tls_cert_file` or `tls_key_file`: which setting to fix.
    pub key: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// A checked certificate chain with its key, and what the log says about it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub(super) key: Arc<CertifiedKey>,
    /// The leaf certificate's subject (`CN=chat.example.org`).
    pub subject: String,
    /// The leaf certificate's serial number, hex.
    pub serial: String,
    /// When the leaf certificate expires.
    pub not_after: SystemTime,
}

impl Identity {
    /// Reads `cert_file` (the certificate, then its chain) and `key_file` (its private key), both
    /// PEM, and checks them with `provider` at time `now`.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Identity, TlsFileError> {
        Self::load_at(cert_file, key_file, &super::provider(), SystemTime::now())
    }

    fn load_at(
        cert_file: &Path,
        key_file: &Path,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Identity, TlsFileError> {
        let cert_error = |reason: String| TlsFileError {
            key: "tls_cert_file",
            path: cert_file.to_path_buf(),
            reason,
        };
        let key_error = |reason: String| TlsFileError {
            key: "tls_key_file",
            path: key_file.to_path_buf(),
            reason,
        };
        let text = read_bounded(cert_file).map_err(cert_error)?;
        let chain = CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_error(pem_reason(&e)))?;
        if chain.is_empty() {
            return Err(cert_error(
                "no certificate in it (a PEM block 'BEGIN CERTIFICATE')".into(),
            ));
        }
        let mut leaf = None;
        for (i, der) in chain.iter().enumerate() {
            let info = validity(der, i, now).map_err(cert_error)?;
            leaf.get_or_insert(info);
        }
        let text = read_bounded(key_file).map_err(key_error)?;
        let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
            pem::Error::NoItemsFound => key_error(
                "no private key in it (a PEM block 'BEGIN PRIVATE KEY', 'BEGIN RSA PRIVATE KEY' \
                 or 'BEGIN EC PRIVATE KEY')"
                    .into(),
            ),
            e => key_error(pem_reason(&e)),
        })?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| key_error(format!("not a usable private key: {e}")))?;
        let key = CertifiedKey::new(chain, signer);
        match key.keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                return Err(key_error(format!(
                    "this key does not belong to the certificate in {} (the first certificate \
                     there must be the server's own, the one this key signs for)",
                    cert_file.display()
                )));
            }
            Err(e) => {
                return Err(key_error(format!(
                    "cannot check it against the certificate: {e}"
                )));
            }
        }
        let leaf = leaf.expect("the chain is not empty");
        Ok(Identity {
            key: Arc::new(key),
            subject: leaf.subject,
            serial: leaf.serial,
            not_after: leaf.not_after,
        })
    }

    /// Whether it expires within two weeks of `now`: worth a warning.
    pub fn expires_soon(&self, now: SystemTime) -> bool {
        self.not_after
            .duration_since(now)
            .is_ok_and(|left| left < EXPIRY_WARNING)
    }
}

/// What the checks learnt of one certificate.
struct CertInfo {
    subject: String,
    serial: String,
    not_after: SystemTime,
}

/// Parses certificate `i` of the chain and checks that `now` is within its validity period.
fn validity(der: &CertificateDer<'_>, i: usize, now: SystemTime) -> Result<CertInfo, String> {
    let which = if i == 0 {
        "the certificate".to_owned()
    } else {
        format!("chain certificate {}", i + 1)
    };
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("{which} is not a valid X.509 certificate: {e}"))?;
    let subject = cert.subject().to_string();
    let at = |t: &x509_parser::time::ASN1Time| {
        // Before 1970 only in a forged or broken certificate; it then reads as 1970.
        UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    let validity = cert.validity();
    let (not_before, not_after) = (at(&validity.not_before), at(&validity.not_after));
    if now > not_after {
        return Err(format!(
            "{which} ({subject}) expired at {}",
            rfc3339(not_after)
        ));
    }
    if now < not_before {
        return Err(format!(
            "{which} ({subject}) is not valid before {} (is the clock right?)",
            rfc3339(not_before)
        ));
    }
    Ok(CertInfo {
        subject,
        serial: cert.raw_serial_as_string(),
        not_after,
    })
}

/// `2026-11-22T00:05:55Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads a whole PEM file, at most [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut text = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "is larger than {} KiB, which no PEM certificate chain or key is",
            MAX_PEM_BYTES >> 10
        ));
    }
    Ok(text)
}

fn pem_reason(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        e => format!("not valid PEM: {e}"),
    }
}

/// The certificate new handshakes get; swapped whole by a reload.
#[derive(Debug)]
pub(super) struct Current(RwLock<Arc<CertifiedKey>>);

impl Current {
    pub(super) fn new(identity: &Identity) -> Current {
        Current(RwLock::new(identity.key.clone()))
    }

    pub(super) fn set(&self, identity: &Identity) {
        // Never poisoned in practice (nothing panics under it); a poisoned lock still holds a
        // complete value, so taking it over is safe.
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = identity.key.clone();
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, CertifiedIssuer, IsCa, KeyPair, date_time_ymd};

    /// PEM files in a directory of their own, removed afterwards.
    struct Files(PathBuf);

    impl Files {
        fn new(name: &str) -> Files {
            let dir = std::env::temp_dir().join(format!("gcd-tls-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A certificate for localhost valid from `from` to `until` (years), signed by itself or by
    /// `issuer`, with its key, both PEM.
    fn leaf(
        from: i32,
        until: i32,
        issuer: Option<&CertifiedIssuer<'_, KeyPair>>,
    ) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = match issuer {
            Some(ca) => params.signed_by(&key, &**ca).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), key.serialize_pem())
    }

    fn ca(from: i32, until: i32) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(until, 1, 1);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn load(cert: &Path, key: &Path) -> Result<Identity, TlsFileError> {
        Identity::load(cert, key)
    }

    /// The error's key, and whether its text contains `text`.
    fn refused(result: Result<Identity, TlsFileError>, key: &str, text: &str) {
        let e = result.expect_err("refused");
        assert_eq!(e.key, key, "{e}");
        assert!(e.to_string().starts_with(&format!("{key} /")), "{e}");
        assert!(e.to_string().contains(text), "{e}");
    }

    #[test]
    fn a_certificate_with_its_chain_and_key_loads() {
        let f = Files::new("good");
        let ca = ca(2020, 4000);
        let (cert, key) = leaf(2020, 4000, Some(&ca));
        let chain = f.write("chain.pem", &format!("{cert}{}", ca.pem()));
        let key = f.write("key.pem", &key);
        let id = load(&chain, &key).unwrap();
        assert_eq!(id.key.cert.len(), 2, "the chain is served whole");
        assert!(
            id.subject.contains("CN=rcgen self signed cert"),
            "{}",
            id.subject
        );
        assert!(!id.serial.is_empty());
        assert_eq!(rfc3339(id.not_after), "4000-01-01T00:00:00Z");
        assert!(!id.expires_soon(SystemTime::now()));
        assert!(id.expires_soon(id.not_after - Duration::from_secs(3600)));
        // The same files a second after the leaf's end (the CA's lasts as long): refused.
        let later = id.not_after + Duration::from_secs(1);
        let provider = crate::tls::provider();
        refused(
            Identity::load_at(&chain, &key, &provider, later),
            "tls_cert_file",
            "the certificate (CN=rcgen self signed cert) expired at 4000-01-01T00:00:00Z",
        );
    }

    #[test]
    fn unusable_files_are_refused_naming_the_key() {
        let f = Files::new("bad");
        let (good_cert, good_key) = leaf(2020, 4000, None);
        let (_, other_key) = leaf(2020, 4000, None);
        let (old_cert, old_key) = leaf(2000, 2001, None);
        let (future_cert, future_key) = leaf(3999, 4000, None);
        let cert = f.write("cert.pem", &good_cert);
        let key = f.write("key.pem", &good_key);
        let missing = f.0.join("missing.pem");

        refused(
            load(&missing, &key),
            "tls_cert_file",
            "cannot read: No such file",
        );
        refused(
            load(&cert, &missing),
            "tls_key_file",
            "cannot read: No such file",
        );
        // Each file given the other's contents.
        refused(load(&key, &key), "tls_cert_file", "no certificate in it");
        refused(load(&cert, &cert), "tls_key_file", "no private key in it");
        let other = f.write("other.pem", &other_key);
        refused(
            load(&cert, &other),
            "tls_key_file",
            "does not belong to the certificate",
        );
        let (old, old_key) = (
            f.write("old.pem", &old_cert),
            f.write("oldkey.pem", &old_key),
        );
        refused(
            load(&old, &old_key),
            "tls_cert_file",
            "expired at 2001-01-01T00:00:00Z",
        );
        let future = f.write("future.pem", &future_cert);
        let future_key = f.write("futurekey.pem", &future_key);
        refused(
            load(&future, &future_key),
            "tls_cert_file",
            "not valid before 3999-01-01",
        );
        let broken = f.write(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        refused(load(&broken, &key), "tls_cert_file", "not valid PEM");
        let not_x509 = f.write(
            "notx509.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        );
        refused(
            load(&not_x509, &key),
            "tls_cert_file",
            "not a valid X.509 certificate",
        );
        refused(load(&f.0, &key), "tls_cert_file", "cannot read");
    }

    #[test]
    fn an_expired_certificate_anywhere_in_the_chain_is_refused() {
        let f = Files::new("chain");
        let ca = ca(2000, 2001);
        let (cert, key) = leaf(2020, 4000, Some(&ca));
        let chain = f.write("chain.pem", &format!("{cert}{}", ca.pem()));
        let key = f.write("key.pem", &key);
        refused(load(&chain, &key), "tls_cert_file", "chain certificate 2");
    }
}
