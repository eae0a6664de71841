//! A throwaway certificate authority for TLS tests: a CA, server certificates for loopback and
//! client certificates with a chosen common name and DNS names, all written as PEM files into
//! a folder the test owns (rcgen; nothing is read from the host).

use std::path::{Path, PathBuf};

/// A PEM certificate file and its key file.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test CA that writes its certificates under `dir`.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM), to trust or to require client certificates from.
    pub ca_file: PathBuf,
}

impl TestCa {
    /// A new CA called `name`; its files go to `dir` (which must exist). Another CA of the same
    /// name in the same folder writes its certificates over the same files (a renewal).
    pub fn new(dir: &Path, name: &str) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.join(format!("{name}-ca.crt"));
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Self {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            issuer: rcgen::Issuer::new(params, key),
            ca_file,
        }
    }

    /// A server certificate for `localhost`, 127.0.0.1 and `extra_names`, saved as `<file>.crt`
    /// and `<file>.key`.
    pub fn server(&self, file: &str, extra_names: &[&str]) -> CertFiles {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        names.extend(extra_names.iter().map(|s| s.to_string()));
        self.issue(
            file,
            "127.0.0.1",
            names,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with subject common name `common_name` and DNS subject
    /// alternative names `dns_names`.
    pub fn client(&self, file: &str, common_name: &str, dns_names: &[&str]) -> CertFiles {
        let names = dns_names.iter().map(|s| s.to_string()).collect();
        self.issue(
            file,
            common_name,
            names,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(
        &self,
        file: &str,
        common_name: &str,
        names: Vec<String>,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> CertFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = CertFiles {
            cert: self.dir.join(format!("{}-{file}.crt", self.name)),
            key: self.dir.join(format!("{}-{file}.key", self.name)),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}
