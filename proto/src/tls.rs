//! TLS on the gRPC links, when certificates are configured.
//!
//! A daemon with a certificate and key (`TLS_CERT_FILE`, `TLS_KEY_FILE`)
//! serves TLS only; a process with a CA (`TLS_CA_FILE`, the mount's
//! `mfstlsca`) dials every master, chunkserver and metalogger with TLS and
//! accepts only servers whose certificate that CA signed for the host it
//! dials (a name, or an IP address as a SAN). Without them every link is
//! plain HTTP/2. The setting is the process's own: each binary sets it once
//! at start ([`set`]), and every channel is made by [`endpoint`].

use std::path::Path;
use std::sync::OnceLock;

use rustls_pki_types::pem::PemObject;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The TLS settings of one process.
#[derive(Clone, Default)]
pub struct Tls {
    /// Checked at load: serving with it cannot fail.
    server: Option<ServerTlsConfig>,
    ca: Option<Certificate>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("serves", &self.server.is_some())
            .field("dials", &self.ca.is_some())
            .finish()
    }
}

fn read(what: &str, key: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{key}: cannot read the {what} {path}: {e}"))
}

/// Whether `pem` holds a PEM block of `label` (`CERTIFICATE`, `PRIVATE KEY`).
fn has_pem(pem: &[u8], label: &str) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains(&format!("-----BEGIN {label}"))
        || (label == "PRIVATE KEY"
            && (text.contains("-----BEGIN RSA PRIVATE KEY")
                || text.contains("-----BEGIN EC PRIVATE KEY")))
}

impl Tls {
    /// Settings from the files named (empty: not set). The certificate and
    /// key go together; each file must hold what its key names, in PEM.
    pub fn load(cert: &str, key: &str, ca: &str) -> Result<Tls, String> {
        let server = match (cert.is_empty(), key.is_empty()) {
            (true, true) => None,
            (false, true) => {
                return Err(
                    "TLS_CERT_FILE is set but TLS_KEY_FILE is not: set both, or neither".into(),
                )
            }
            (true, false) => {
                return Err(
                    "TLS_KEY_FILE is set but TLS_CERT_FILE is not: set both, or neither".into(),
                )
            }
            (false, false) => {
                let c = read("certificate", "TLS_CERT_FILE", cert)?;
                if !has_pem(&c, "CERTIFICATE") {
                    return Err(format!("TLS_CERT_FILE: {cert} holds no PEM certificate"));
                }
                let k = read("private key", "TLS_KEY_FILE", key)?;
                if !has_pem(&k, "PRIVATE KEY") {
                    return Err(format!("TLS_KEY_FILE: {key} holds no PEM private key"));
                }
                let cfg = ServerTlsConfig::new().identity(Identity::from_pem(c, k));
                // Parsed now, so a damaged file stops the start with its name.
                tonic::transport::Server::builder()
                    .tls_config(cfg.clone())
                    .map_err(|e| {
                        format!("TLS_CERT_FILE {cert} / TLS_KEY_FILE {key} cannot be used: {e}")
                    })?;
                Some(cfg)
            }
        };
        let ca = Tls::dialing("TLS_CA_FILE", ca)?.ca;
        Ok(Tls { server, ca })
    }

    /// Settings of a process that only dials (a mount, a tool): the CA in
    /// file `ca` (empty: plain), set by the setting `key` (named in errors).
    pub fn dialing(key: &str, ca: &str) -> Result<Tls, String> {
        if ca.is_empty() {
            return Ok(Tls::default());
        }
        let c = read("CA certificate", key, ca)?;
        // Parsed now, so a damaged file stops the start with its name.
        let mut ders = Vec::new();
        for der in rustls_pki_types::CertificateDer::pem_slice_iter(&c) {
            ders.push(der.map_err(|e| format!("{key}: {ca} cannot be read: {e:?}"))?);
        }
        if ders.is_empty() {
            return Err(format!("{key}: {ca} holds no PEM certificate"));
        }
        let (_, bad) = rustls::RootCertStore::empty().add_parsable_certificates(ders);
        if bad > 0 {
            return Err(format!(
                "{key}: {ca} holds {bad} certificate(s) that cannot be parsed"
            ));
        }
        Ok(Tls {
            server: None,
            ca: Some(Certificate::from_pem(c)),
        })
    }

    /// The server side, when a certificate is set.
    pub fn server(&self) -> Option<ServerTlsConfig> {
        self.server.clone()
    }

    /// Whether channels are dialed with TLS.
    pub fn dials(&self) -> bool {
        self.ca.is_some()
    }

    /// A channel's endpoint for `addr` (`host:port`).
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        match &self.ca {
            None => Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("bad address {addr:?}: {e}")),
            Some(ca) => Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| format!("bad address {addr:?}: {e}"))?
                .tls_config(ClientTlsConfig::new().ca_certificate(ca.clone()))
                .map_err(|e| format!("TLS to {addr}: {e}")),
        }
    }
}

static TLS: OnceLock<Tls> = OnceLock::new();

/// Sets this process's TLS settings (once, at start; later calls are
/// ignored). Without a call, every link is plain.
pub fn set(tls: Tls) {
    let _ = TLS.set(tls);
}

/// A daemon's start: its TLS_CERT_FILE, TLS_KEY_FILE and TLS_CA_FILE
/// loaded ([`Tls::load`]) and made this process's settings ([`set`]).
pub fn load_and_set(cert: &str, key: &str, ca: &str) -> Result<(), String> {
    set(Tls::load(cert, key, ca)?);
    Ok(())
}

/// This process's TLS settings.
pub fn get() -> &'static Tls {
    TLS.get_or_init(Tls::default)
}

/// A channel's endpoint for `addr` (`host:port`) under this process's
/// settings: `https` with the CA when one is set, else `http`.
pub fn endpoint(addr: &str) -> Result<Endpoint, String> {
    get().endpoint(addr)
}

/// What to do about a connection error that shows the two ends disagree
/// on TLS, recognized from its text.
pub fn hint(error: &str) -> Option<&'static str> {
    if error.contains("frame with invalid size") && !get().dials() {
        // An HTTP/2 client reading a TLS server's handshake.
        Some("does the server serve TLS? then give this client the cluster's CA: TLS_CA_FILE, -o mfstlsca, --tls-ca or MFS_TLS_CA_FILE")
    } else if error.contains("InvalidContentType") && get().dials() {
        // A TLS client reading a plain HTTP/2 server.
        Some("the server does not serve TLS: set TLS_CERT_FILE and TLS_KEY_FILE on it, or dial it without a CA")
    } else if error.contains("invalid peer certificate") {
        Some("the server's certificate is not one the CA given here signed for the address dialed")
    } else {
        None
    }
}

/// A gRPC server builder under this process's settings: serving TLS only
/// when a certificate is set.
pub fn server_builder() -> Result<tonic::transport::Server, String> {
    let b = tonic::transport::Server::builder();
    match get().server() {
        None => Ok(b),
        Some(cfg) => b
            .tls_config(cfg)
            .map_err(|e| format!("TLS_CERT_FILE / TLS_KEY_FILE: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process dials plain (nothing set): an HTTP/2 error from a TLS
    /// server gets the CA hint; a TLS-only error text does not.
    #[test]
    fn a_tls_mismatch_gets_a_hint() {
        let plain_to_tls = "h2 protocol error: connection error detected: frame with invalid size";
        assert!(hint(plain_to_tls).is_some_and(|h| h.contains("CA")));
        assert!(hint("invalid peer certificate: UnknownIssuer").is_some());
        assert!(hint("received corrupt message of type InvalidContentType").is_none());
        assert!(hint("tcp connect error: Connection refused (os error 111)").is_none());
    }

    #[test]
    fn bad_settings_name_the_key_and_file() {
        let dir = std::env::temp_dir().join(format!("mfs-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.to_str().unwrap();
        let e = Tls::load("/x/cert.pem", "", "").unwrap_err();
        assert!(e.contains("TLS_KEY_FILE is not"), "{e}");
        let e = Tls::load("", "", "/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.contains("TLS_CA_FILE") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
        let e = Tls::load("", "", junk).unwrap_err();
        assert!(
            e.contains("TLS_CA_FILE") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = Tls::load(junk, junk, "").unwrap_err();
        assert!(e.contains("TLS_CERT_FILE"), "{e}");
        // PEM framing around garbage: refused at load, not at first use.
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let broken = broken.to_str().unwrap();
        let e = Tls::dialing("-o mfstlsca", broken).unwrap_err();
        assert!(e.contains("-o mfstlsca") && e.contains(broken), "{e}");
        let broken_key = dir.join("broken.key");
        std::fs::write(
            &broken_key,
            "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Tls::load(broken, broken_key.to_str().unwrap(), "").unwrap_err();
        assert!(e.contains("TLS_CERT_FILE") && e.contains(broken), "{e}");
        let plain = Tls::load("", "", "").unwrap();
        assert!(!plain.dials() && plain.server().is_none());
        assert_eq!(
            plain.endpoint("127.0.0.1:9421").unwrap().uri().scheme_str(),
            Some("http")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
