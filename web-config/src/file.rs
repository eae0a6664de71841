//! The web configuration file, as the Prometheus exporter-toolkit defines it:
//! `tls_server_config` (certificate and key, client-certificate policy and CA, TLS versions,
//! Go cipher-suite and curve names), `http_server_config` (`http2`, `headers`) and
//! `basic_auth_users` (user: bcrypt hash).
//!
//! [`parse`] reads the YAML strictly (an unknown key is an error) and validates it into
//! [`Settings`], collecting every problem with its field path. Settings of the format that this
//! server does not implement (`client_allowed_sans`, `rate_limit`) are rejected by name, never
//! ignored. Relative file names are taken from the directory of the file, as exporter-toolkit
//! does. Reading the certificates is [`crate::tls`]'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use http::{HeaderName, HeaderValue};
use kepler_config_errors::{ConfigError, ConfigErrors};
use rustls::crypto::ring::{cipher_suite, kx_group};
use rustls::crypto::SupportedKxGroup;
use rustls::SupportedCipherSuite;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    /// Part of the format; not implemented here (rejected when set).
    #[serde(default)]
    rate_limit: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    client_ca: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    client_auth_type: Option<String>,
    #[serde(default)]
    client_ca_file: Option<String>,
    /// Part of the format; not implemented here (rejected when set).
    #[serde(default)]
    client_allowed_sans: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

/// PEM text: a file (re-read when it changes) or inline in the web configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pem {
    File(PathBuf),
    Inline(String),
}

/// Go's `crypto/tls` client-certificate policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate is asked for.
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required, not verified.
    RequireAnyClientCert,
    /// Verified against `client_ca_file` when the client sends one.
    VerifyClientCertIfGiven,
    /// Required and verified against `client_ca_file`.
    RequireAndVerifyClientCert,
}

/// TLS protocol versions rustls speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// `tls_server_config`, validated.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: Pem,
    pub key: Pem,
    pub client_ca: Option<Pem>,
    pub client_auth: ClientAuth,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// TLS 1.2 suites in the configured order; empty: rustls's defaults. TLS 1.3 suites are
    /// not configurable (as in Go): all of them are always offered.
    pub cipher_suites: Vec<SupportedCipherSuite>,
    /// Pick the server's preferred suite rather than the client's (Go's default: true).
    pub prefer_server_cipher_suites: bool,
    /// Key-exchange groups in preference order; empty: rustls's defaults.
    pub curves: Vec<&'static dyn SupportedKxGroup>,
}

/// The whole file, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: plain HTTP (basic auth and headers still apply).
    pub tls: Option<TlsSettings>,
    /// Offer HTTP/2 over TLS (ALPN `h2`); default true. Plain HTTP is HTTP/1.1 only.
    pub http2: bool,
    /// Added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// User name -> bcrypt hash; empty: no basic auth.
    pub users: BTreeMap<String, String>,
}

impl Settings {
    /// The files these settings read (certificate, key, client CA), to watch for changes.
    pub fn files(&self) -> Vec<PathBuf> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|pem| match pem {
                Pem::File(path) => Some(path.clone()),
                Pem::Inline(_) => None,
            })
            .collect()
    }
}

/// The headers that may be set, with the values allowed (`None`: any), as in exporter-toolkit.
const HEADERS: &[(&str, Option<&[&str]>)] = &[
    ("Strict-Transport-Security", None),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-XSS-Protection", None),
    ("Content-Security-Policy", None),
];

/// Go's TLS 1.3 suite names: accepted, and (as in Go) not configurable.
const TLS13_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Go cipher-suite names that rustls does not implement (CBC, RSA key exchange, 3DES, RC4).
const GO_ONLY_SUITES: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// What a Go cipher-suite name means here.
#[derive(Debug, Clone, Copy)]
pub enum Cipher {
    /// A TLS 1.2 suite rustls offers.
    Tls12(SupportedCipherSuite),
    /// A TLS 1.3 suite: always on, as in Go.
    Tls13,
}

/// Maps a Go `crypto/tls` cipher-suite name to the rustls suite, or says why it cannot.
pub fn cipher(name: &str) -> Result<Cipher, String> {
    let suite = match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        n if TLS13_NAMES.contains(&n) => return Ok(Cipher::Tls13),
        n if GO_ONLY_SUITES.contains(&n) => {
            return Err(format!(
                "{n:?} is not offered here: rustls implements no CBC, RSA key exchange, 3DES or \
                 RC4 suites (use ECDHE with AES-GCM or ChaCha20-Poly1305)"
            ))
        }
        n => {
            return Err(format!(
                "unknown cipher suite {n:?} (want a Go crypto/tls name)"
            ))
        }
    };
    Ok(Cipher::Tls12(suite))
}

/// Maps a Go curve name (`CurveP256`, `X25519`...) to the rustls key-exchange group.
pub fn curve(name: &str) -> Result<&'static dyn SupportedKxGroup, String> {
    match name {
        "X25519" => Ok(kx_group::X25519),
        "CurveP256" => Ok(kx_group::SECP256R1),
        "CurveP384" => Ok(kx_group::SECP384R1),
        "CurveP521" | "X25519MLKEM768" => Err(format!(
            "{name:?} is not offered here (rustls on ring has X25519, CurveP256 and CurveP384)"
        )),
        other => Err(format!(
            "unknown curve {other:?} (want X25519, CurveP256 or CurveP384)"
        )),
    }
}

fn version(name: &str) -> Result<TlsVersion, String> {
    match name {
        "TLS13" => Ok(TlsVersion::Tls13),
        "TLS12" => Ok(TlsVersion::Tls12),
        "TLS10" | "TLS11" => Err(format!(
            "{name} is not offered here (rustls speaks TLS12 and TLS13)"
        )),
        other => Err(format!(
            "unknown TLS version {other:?} (want TLS12 or TLS13)"
        )),
    }
}

fn client_auth(name: &str) -> Result<ClientAuth, String> {
    Ok(match name {
        "" | "NoClientCert" => ClientAuth::NoClientCert,
        "RequestClientCert" => ClientAuth::RequestClientCert,
        "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
        "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
        "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
        other => {
            return Err(format!(
                "unknown client_auth_type {other:?} (want NoClientCert, RequestClientCert, \
                 RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
            ))
        }
    })
}

/// Empty strings count as unset, as in Go.
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// Parses and validates the text of a web configuration file; relative file names are joined
/// to `dir` (the file's directory). Every problem is reported, each with its field path.
pub fn parse(text: &str, dir: &Path) -> Result<Settings, ConfigErrors> {
    let raw: RawFile = if text.trim().is_empty() {
        RawFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let message = e.to_string();
            // serde_yaml_ng names the path first (`tls_server_config: unknown field ...`).
            let (path, message) = match message.split_once(": ") {
                Some((path, rest))
                    if !path.contains(' ') && !path.is_empty() && path != "invalid type" =>
                {
                    (path.to_string(), rest.to_string())
                }
                _ => ("(document)".to_string(), message),
            };
            ConfigErrors(vec![ConfigError { path, message }])
        })?
    };
    let mut errors = Vec::new();
    let mut fail = |path: &str, message: String| errors.push(ConfigError::new(path, message));

    if raw.rate_limit.as_ref().is_some_and(|v| !v.is_null()) {
        fail(
            "rate_limit",
            "is not supported by this server; remove it (rate limiting belongs in a proxy)".into(),
        );
    }
    let tls = raw
        .tls_server_config
        .as_ref()
        .and_then(|t| tls_settings(t, dir, &mut fail));

    let http = raw.http_server_config.unwrap_or_default();
    let mut headers = Vec::new();
    for (name, value) in http.headers.unwrap_or_default() {
        let path = format!("http_server_config.headers.{name}");
        let Some((canonical, allowed)) = HEADERS.iter().find(|(h, _)| *h == name) else {
            fail(
                &path,
                format!(
                    "header {name:?} cannot be configured (allowed: {})",
                    HEADERS
                        .iter()
                        .map(|(h, _)| *h)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            continue;
        };
        if value.is_empty() {
            continue; // "Unset if blank."
        }
        if let Some(allowed) = allowed {
            if !allowed.contains(&value.as_str()) {
                fail(
                    &path,
                    format!("must be one of {}, got {value:?}", allowed.join(", ")),
                );
                continue;
            }
        }
        match (
            HeaderName::from_bytes(canonical.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => fail(&path, format!("invalid header value {value:?}")),
        }
    }

    let users = raw.basic_auth_users.unwrap_or_default();
    for (user, hash) in &users {
        let path = format!("basic_auth_users.{user}");
        if user.contains(':') {
            fail(&path, "a user name cannot contain ':'".into());
        }
        if hash.parse::<bcrypt::HashParts>().is_err() {
            fail(
                &path,
                "is not a bcrypt hash (want $2y$10$... as `htpasswd -nBC 10 \"\" | tr -d ':\\n'` prints)"
                    .into(),
            );
        }
    }

    if errors.is_empty() {
        Ok(Settings {
            tls,
            http2: http.http2.unwrap_or(true),
            headers,
            users,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

fn tls_settings(
    raw: &RawTls,
    dir: &Path,
    fail: &mut impl FnMut(&str, String),
) -> Option<TlsSettings> {
    const P: &str = "tls_server_config";
    let enabled = [
        &raw.cert,
        &raw.key,
        &raw.cert_file,
        &raw.key_file,
        &raw.client_ca,
        &raw.client_ca_file,
        &raw.client_auth_type,
    ]
    .into_iter()
    .any(|v| set(v).is_some());
    if raw
        .client_allowed_sans
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        fail(
            &format!("{P}.client_allowed_sans"),
            "is not supported by this server; remove it (use RequireAndVerifyClientCert with a \
             dedicated client CA)"
                .into(),
        );
    }
    let others_set = set(&raw.min_version).is_some()
        || set(&raw.max_version).is_some()
        || raw.cipher_suites.as_ref().is_some_and(|c| !c.is_empty())
        || raw
            .curve_preferences
            .as_ref()
            .is_some_and(|c| !c.is_empty());
    if !enabled {
        if others_set {
            fail(
                &format!("{P}.cert_file"),
                "TLS settings are given but no certificate: set cert_file and key_file".into(),
            );
        }
        return None;
    }
    let file = |name: &str| {
        let path = Path::new(name);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            dir.join(path)
        }
    };
    let mut pem =
        |inline: &Option<String>, path: &Option<String>, field: &str, required: bool| match (
            set(inline),
            set(path),
        ) {
            (Some(_), Some(_)) => {
                fail(
                    &format!("{P}.{field}_file"),
                    format!("set only one of {field} and {field}_file"),
                );
                None
            }
            (Some(text), None) => Some(Pem::Inline(text.to_string())),
            (None, Some(path)) => Some(Pem::File(file(path))),
            (None, None) => {
                if required {
                    fail(
                        &format!("{P}.{field}_file"),
                        format!("missing one of {field} or {field}_file"),
                    );
                }
                None
            }
        };
    let cert = pem(&raw.cert, &raw.cert_file, "cert", true);
    let key = pem(&raw.key, &raw.key_file, "key", true);
    let client_ca = pem(&raw.client_ca, &raw.client_ca_file, "client_ca", false);
    let client_auth = match client_auth(set(&raw.client_auth_type).unwrap_or("")) {
        Ok(c) => c,
        Err(e) => {
            fail(&format!("{P}.client_auth_type"), e);
            ClientAuth::NoClientCert
        }
    };
    match (client_auth, client_ca.is_some()) {
        (ClientAuth::NoClientCert, true) => fail(
            &format!("{P}.client_auth_type"),
            "a client CA is configured without a client auth policy (want e.g. \
             RequireAndVerifyClientCert)"
                .into(),
        ),
        (ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert, false) => {
            fail(
                &format!("{P}.client_ca_file"),
                "client_auth_type verifies client certificates: set client_ca_file (the CA \
                 they must chain to)"
                    .into(),
            )
        }
        _ => {}
    }
    let mut version_at = |field: &str, value: &Option<String>, default| match set(value) {
        None => default,
        Some(v) => version(v).unwrap_or_else(|e| {
            fail(&format!("{P}.{field}"), e);
            default
        }),
    };
    let min_version = version_at("min_version", &raw.min_version, TlsVersion::Tls12);
    let max_version = version_at("max_version", &raw.max_version, TlsVersion::Tls13);
    if min_version > max_version {
        fail(
            &format!("{P}.min_version"),
            "is above max_version".to_string(),
        );
    }
    let mut cipher_suites = Vec::new();
    for (i, name) in raw.cipher_suites.iter().flatten().enumerate() {
        match cipher(name) {
            Ok(Cipher::Tls12(s)) => cipher_suites.push(s),
            Ok(Cipher::Tls13) => {}
            Err(e) => fail(&format!("{P}.cipher_suites[{i}]"), e),
        }
    }
    if max_version == TlsVersion::Tls12
        && raw.cipher_suites.as_ref().is_some_and(|c| !c.is_empty())
        && cipher_suites.is_empty()
    {
        fail(
            &format!("{P}.cipher_suites"),
            "names no TLS 1.2 suite, but max_version is TLS12".into(),
        );
    }
    let mut curves = Vec::new();
    for (i, name) in raw.curve_preferences.iter().flatten().enumerate() {
        match curve(name) {
            Ok(c) => curves.push(c),
            Err(e) => fail(&format!("{P}.curve_preferences[{i}]"), e),
        }
    }
    Some(TlsSettings {
        cert: cert?,
        key: key?,
        client_ca,
        client_auth,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        curves,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse(text, Path::new("/etc/kepler"))
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    const HASH: &str = "$2y$04$aFoXnzwrDLKtGpmrBhVkm.AbY7qX2ecLRZAMq34pzCqqafMEGJwHS";

    #[test]
    fn a_full_file_is_read_with_defaults_and_relative_paths() {
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: /abs/server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, \
             TLS_AES_128_GCM_SHA256]\n  curve_preferences: [X25519, CurveP256]\n\
             http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             Content-Security-Policy: \"default-src 'self'\"\n\
             basic_auth_users:\n  prometheus: '{HASH}'\n"
        );
        let s = parse(&text, Path::new("/etc/kepler")).unwrap();
        let tls = s.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Pem::File("/etc/kepler/server.crt".into()));
        assert_eq!(tls.key, Pem::File("/abs/server.key".into()));
        assert_eq!(tls.client_ca, Some(Pem::File("/etc/kepler/ca.crt".into())));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(tls.min_version, TlsVersion::Tls13);
        assert_eq!(tls.max_version, TlsVersion::Tls13);
        assert!(tls.prefer_server_cipher_suites);
        assert_eq!(
            tls.cipher_suites.len(),
            1,
            "the TLS 1.3 name is not configurable"
        );
        assert_eq!(tls.curves.len(), 2);
        assert!(!s.http2);
        let headers: Vec<_> = s
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("content-security-policy", "default-src 'self'"),
                ("x-frame-options", "deny")
            ]
        );
        assert_eq!(s.users.get("prometheus").map(String::as_str), Some(HASH));
        assert_eq!(
            s.files(),
            [
                PathBuf::from("/etc/kepler/server.crt"),
                PathBuf::from("/abs/server.key"),
                PathBuf::from("/etc/kepler/ca.crt")
            ]
        );
    }

    #[test]
    fn without_tls_settings_it_is_plain_http_with_http2_on() {
        let s = parse(
            &format!("basic_auth_users: {{u: '{HASH}'}}\n"),
            Path::new("/"),
        )
        .unwrap();
        assert!(s.tls.is_none());
        assert!(s.http2);
        assert_eq!(s.users.len(), 1);
        let empty = parse("", Path::new("/")).unwrap();
        assert!(empty.tls.is_none() && empty.users.is_empty() && empty.headers.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = errors("tls_server_config:\n  cert_fil: x\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("tls_server_config: unknown field `cert_fil`"),
            "{e:?}"
        );
        let e = errors("basic_auth_user: {}\n");
        assert!(e[0].contains("unknown field `basic_auth_user`"), "{e:?}");
    }

    #[test]
    fn every_problem_is_reported_with_its_field_path() {
        let e = errors(
            "tls_server_config:\n  cert_file: a\n  client_auth_type: Sometimes\n  \
             min_version: TLS10\n  max_version: TLS14\n  \
             cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_RSA_WITH_AES_128_CBC_SHA, NOPE]\n  \
             curve_preferences: [CurveP521]\n  client_allowed_sans: [a]\n\
             http_server_config:\n  headers: {X-Frame-Options: allow, Server: me}\n\
             basic_auth_users: {bob: plaintext}\nrate_limit: {interval: 1s, burst: 2}\n",
        );
        let paths: Vec<&str> = e.iter().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "rate_limit",
                "tls_server_config.client_allowed_sans",
                "tls_server_config.key_file",
                "tls_server_config.client_auth_type",
                "tls_server_config.min_version",
                "tls_server_config.max_version",
                "tls_server_config.cipher_suites[1]",
                "tls_server_config.cipher_suites[2]",
                "tls_server_config.curve_preferences[0]",
                "http_server_config.headers.Server",
                "http_server_config.headers.X-Frame-Options",
                "basic_auth_users.bob",
            ],
            "{e:#?}"
        );
        assert!(e[4].contains("TLS10 is not offered here"), "{}", e[4]);
        assert!(e[6].contains("no CBC"), "{}", e[6]);
        assert!(e[7].contains("unknown cipher suite \"NOPE\""), "{}", e[7]);
    }

    #[test]
    fn client_certificate_policies_need_the_right_ca_setting() {
        let e = errors("tls_server_config: {cert_file: a, key_file: b, client_ca_file: c}\n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("tls_server_config.client_auth_type: a client CA is configured"),
            "{e:?}"
        );
        let e = errors(
            "tls_server_config: {cert_file: a, key_file: b, client_auth_type: RequireAndVerifyClientCert}\n",
        );
        assert!(
            e[0].starts_with("tls_server_config.client_ca_file:"),
            "{e:?}"
        );
        for (name, want) in [
            ("RequestClientCert", ClientAuth::RequestClientCert),
            ("RequireAnyClientCert", ClientAuth::RequireAnyClientCert),
            ("RequireClientCert", ClientAuth::RequireAnyClientCert),
            ("NoClientCert", ClientAuth::NoClientCert),
        ] {
            let s = parse(
                &format!(
                    "tls_server_config: {{cert_file: a, key_file: b, client_auth_type: {name}}}\n"
                ),
                Path::new("/"),
            )
            .unwrap();
            assert_eq!(s.tls.unwrap().client_auth, want, "{name}");
        }
    }

    #[test]
    fn tls_settings_without_a_certificate_are_an_error() {
        let e = errors("tls_server_config: {min_version: TLS13}\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("tls_server_config.cert_file: TLS settings are given"));
        let e = errors("tls_server_config: {cert: x, cert_file: y, key_file: z}\n");
        assert_eq!(
            e,
            ["tls_server_config.cert_file: set only one of cert and cert_file"]
        );
    }

    #[test]
    fn go_cipher_suite_names_map_to_rustls_suites() {
        use rustls::CipherSuite as C;
        for (go, want) in [
            (
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
                C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
                C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ),
            (
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ),
            (
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
                C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
            (
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ),
        ] {
            match cipher(go) {
                Ok(Cipher::Tls12(s)) => assert_eq!(s.suite(), want, "{go}"),
                other => panic!("{go}: {other:?}"),
            }
        }
        for go in TLS13_NAMES {
            assert!(matches!(cipher(go), Ok(Cipher::Tls13)), "{go}");
        }
        for go in GO_ONLY_SUITES {
            assert!(cipher(go).unwrap_err().contains("not offered here"), "{go}");
        }
        assert!(
            cipher("tls_ecdhe_rsa_with_aes_128_gcm_sha256").is_err(),
            "names are exact"
        );
    }

    #[test]
    fn curves_and_versions() {
        assert_eq!(curve("X25519").unwrap().name(), rustls::NamedGroup::X25519);
        assert_eq!(
            curve("CurveP256").unwrap().name(),
            rustls::NamedGroup::secp256r1
        );
        assert_eq!(
            curve("CurveP384").unwrap().name(),
            rustls::NamedGroup::secp384r1
        );
        assert!(curve("CurveP521").unwrap_err().contains("not offered"));
        assert!(curve("P256").unwrap_err().contains("unknown curve"));
        assert_eq!(version("TLS12"), Ok(TlsVersion::Tls12));
        assert!(version("TLS11").is_err());
        let e = errors("tls_server_config: {cert_file: a, key_file: b, min_version: TLS13, max_version: TLS12}\n");
        assert_eq!(e, ["tls_server_config.min_version: is above max_version"]);
    }
}
