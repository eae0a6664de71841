//! Which cluster a client certificate speaks for: the names a verified certificate carries
//! (subject common names, DNS subject alternative names) looked up in the listener's
//! `auth.certificates`. The TLS layer has already checked the chain against the listener's
//! `tls.client_ca_file`; this only reads names from the leaf certificate.

use crate::config::{CertificateIdentities, CertificateName};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Why a client certificate does not name a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("the client certificate cannot be read")]
    Unreadable,
    #[error("the client certificate's names are bound to different clusters")]
    Ambiguous,
}

/// The names of a DER certificate: every subject common name and every DNS subject alternative
/// name (lowercased, as DNS names compare without case).
pub fn names_of(der: &[u8]) -> Result<Vec<CertificateName>, CertificateError> {
    let (_, certificate) =
        X509Certificate::from_der(der).map_err(|_| CertificateError::Unreadable)?;
    let mut names = Vec::new();
    for cn in certificate.subject().iter_common_name() {
        let text = cn.as_str().map_err(|_| CertificateError::Unreadable)?;
        names.push(CertificateName::CommonName(text.to_string()));
    }
    let san = certificate
        .subject_alternative_name()
        .map_err(|_| CertificateError::Unreadable)?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        if let GeneralName::DNSName(dns) = name {
            names.push(CertificateName::DnsName(dns.to_ascii_lowercase()));
        }
    }
    Ok(names)
}

/// The cluster bound to one of the names of certificate `der`: `None` when no name is bound,
/// an error when the certificate cannot be read or its names are bound to different clusters
/// (a certificate never speaks for two clusters).
pub fn cluster_of<'a>(
    identities: &'a CertificateIdentities,
    der: &[u8],
) -> Result<Option<&'a str>, CertificateError> {
    let mut found: Option<&'a str> = None;
    for name in names_of(der)? {
        if let Some(cluster) = identities.get(&name) {
            match found {
                Some(other) if other != cluster => return Err(CertificateError::Ambiguous),
                _ => found = Some(cluster),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    fn certificate(common_name: &str, dns_names: &[&str]) -> Vec<u8> {
        let mut params =
            CertificateParams::new(dns_names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, common_name);
        params.distinguished_name = subject;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn identities(pairs: &[(CertificateName, &str)]) -> CertificateIdentities {
        pairs
            .iter()
            .map(|(name, cluster)| (name.clone(), cluster.to_string()))
            .collect()
    }

    #[test]
    fn names_are_the_common_name_and_dns_names() {
        let der = certificate("spoke-c1", &["C1.example", "otel.c1.example"]);
        assert_eq!(
            names_of(&der).unwrap(),
            vec![
                CertificateName::CommonName("spoke-c1".into()),
                CertificateName::DnsName("c1.example".into()),
                CertificateName::DnsName("otel.c1.example".into()),
            ]
        );
    }

    #[test]
    fn a_bound_name_gives_its_cluster() {
        let ids = identities(&[
            (CertificateName::CommonName("spoke-c1".into()), "c1"),
            (CertificateName::DnsName("c2.example".into()), "c2"),
        ]);
        assert_eq!(
            cluster_of(&ids, &certificate("spoke-c1", &[])),
            Ok(Some("c1"))
        );
        assert_eq!(
            cluster_of(&ids, &certificate("anything", &["c2.example"])),
            Ok(Some("c2"))
        );
        assert_eq!(
            cluster_of(&ids, &certificate("spoke-c3", &["c3.example"])),
            Ok(None)
        );
        // The common name is not a DNS name and the other way round.
        assert_eq!(cluster_of(&ids, &certificate("c2.example", &[])), Ok(None));
    }

    #[test]
    fn names_bound_to_two_clusters_are_refused() {
        let ids = identities(&[
            (CertificateName::CommonName("spoke-c1".into()), "c1"),
            (CertificateName::DnsName("c2.example".into()), "c2"),
        ]);
        let der = certificate("spoke-c1", &["c2.example"]);
        assert_eq!(cluster_of(&ids, &der), Err(CertificateError::Ambiguous));
    }

    #[test]
    fn garbage_is_unreadable() {
        let ids = identities(&[(CertificateName::CommonName("x".into()), "c1")]);
        assert_eq!(
            cluster_of(&ids, b"not a certificate"),
            Err(CertificateError::Unreadable)
        );
    }
}
