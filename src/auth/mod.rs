//! Who may read and write a topic: JSON Web Tokens checked once per request or connection.
//!
//! Owns: the keys (`--jwt-secret-file`, `--jwt-public-key-file`, repeatable for rotation), the
//! checks every token passes (signature, `exp` required, `nbf`, `aud`/`iss` when configured),
//! the grants a valid token carries (`topics` to read, `publish` to write, `sub` to name the
//! client in logs), the topics anyone may read (`--public-topic`), and where a token is carried
//! (`carrier`).
//! The algorithm comes from the key, never from the token alone: an HMAC secret accepts
//! HS256/384/512, an RSA key RS*/PS*, an EC key ES256/ES384, an Ed25519 key EdDSA. A token whose
//! `alg` no configured key accepts — `none`, or HS256 signed with a public key's bytes — is
//! refused before any signature is computed.
//! Must not: run on the delivery path (a stream is checked when it opens, and ends at `exp`),
//! or put a token in a log line.

pub mod carrier;
pub mod pattern;

use std::path::PathBuf;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

pub use pattern::{Pattern, Patterns};

/// Why a request's token does not let it do what it asked. Each maps to one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, and the topic is not public.
    Missing,
    /// Not three base64url parts of JSON, or `exp` is missing.
    Malformed,
    /// No configured key accepts its algorithm, or the signature does not verify.
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    /// A valid token whose claims do not cover the topic.
    NotCovered,
}

impl Denied {
    /// 401 (with `WWW-Authenticate: Bearer`) for a token that is missing or not valid; 403 for
    /// a valid one that does not cover the topic.
    pub fn status(self) -> u16 {
        match self {
            Denied::NotCovered => 403,
            _ => 401,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "token required",
            Denied::Malformed => "malformed token",
            Denied::BadSignature => "bad token signature",
            Denied::Expired => "token expired",
            Denied::NotYetValid => "token not yet valid",
            Denied::WrongAudience => "token audience not accepted",
            Denied::WrongIssuer => "token issuer not accepted",
            Denied::NotCovered => "token does not cover this topic",
        }
    }
}

/// What a valid token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The client's name (`sub`), for logs.
    pub sub: Option<Box<str>>,
    /// When the grant ends (`exp`, seconds since the Unix epoch).
    pub exp: u64,
    topics: Patterns,
    publish: Patterns,
}

impl Grant {
    pub fn can_read(&self, topic: &str) -> bool {
        self.topics.covers(topic)
    }

    pub fn can_publish(&self, topic: &str) -> bool {
        self.publish.covers(topic)
    }
}

/// The claims ringcast reads; the others are ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(deserialize_with = "numeric_date")]
    exp: u64,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
}

/// A NumericDate (RFC 7519 §2) as jsonwebtoken validates it: an integer, or a finite
/// non-negative float rounded to the nearest second (PyJWT writes `time.time() + 3600` as a
/// float). Read any other way, a stream's end would not be the expiry jsonwebtoken checked.
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Seconds;
    impl serde::de::Visitor<'_> for Seconds {
        type Value = u64;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("seconds since the epoch")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<u64, E> {
            // The bounds and rounding of jsonwebtoken 12's `numeric_type` (validation.rs).
            if v.is_finite() && v >= 0.0 && v < u64::MAX as f64 {
                Ok(v.round() as u64)
            } else {
                Err(E::custom("a NumericDate out of range"))
            }
        }
    }
    d.deserialize_any(Seconds)
}

/// Where the keys and rules come from (the flags of the same names).
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    pub jwt_secret_file: Option<PathBuf>,
    pub jwt_public_key_files: Vec<PathBuf>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    pub public_topics: Vec<String>,
}

struct Key {
    key: DecodingKey,
    algorithms: &'static [Algorithm],
}

/// The node's token rules. Built once at startup; read-only and shared by every shard.
pub struct Auth {
    keys: Vec<Key>,
    audience: Option<String>,
    issuer: Option<String>,
    public: Patterns,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Auth")
            .field("keys", &self.keys.len())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("public", &self.public)
            .finish()
    }
}

impl Auth {
    /// Loads the configured keys. `Ok(None)` when no key is configured (subscribing is open, as
    /// before); an error names the file and what is wrong with it.
    pub fn load(cfg: &AuthConfig) -> Result<Option<Auth>, String> {
        let mut keys = Vec::new();
        if let Some(path) = &cfg.jwt_secret_file {
            let raw = std::fs::read(path)
                .map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?;
            // A secret written with `echo` ends with a line break that is not part of it.
            let secret = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let secret = secret.strip_suffix(b"\r").unwrap_or(secret);
            if secret.len() < 32 {
                return Err(format!(
                    "--jwt-secret-file {}: the secret is {} bytes; use at least 32 random bytes \
                     (e.g. `openssl rand -base64 48`)",
                    path.display(),
                    secret.len()
                ));
            }
            let key = DecodingKey::from_secret(secret)
                .map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?;
            keys.push(Key {
                key,
                algorithms: AlgorithmFamily::Hmac.algorithms(),
            });
        }
        for path in &cfg.jwt_public_key_files {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--jwt-public-key-file {}: {e}", path.display()))?;
            // A private key where the public one belongs is an easy slip: jsonwebtoken takes an
            // RSA one as a decoding key and then refuses every RS*/PS* token without a word
            // about why; an EC or Ed25519 one would get only "not a public key".
            if pem_label(&pem).is_some_and(|l| l.ends_with("PRIVATE KEY")) {
                return Err(format!(
                    "--jwt-public-key-file {0} is a private key; give its public key, e.g. \
                     `openssl pkey -in {0} -pubout`",
                    path.display()
                ));
            }
            keys.push(
                public_key(&pem)
                    .map_err(|e| format!("--jwt-public-key-file {}: {e}", path.display()))?,
            );
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Auth {
            keys,
            audience: cfg.jwt_audience.clone(),
            issuer: cfg.jwt_issuer.clone(),
            public: Patterns::parse(&cfg.public_topics),
        }))
    }

    /// Whether anyone may read `topic` without a token (`--public-topic`).
    pub fn is_public(&self, topic: &str) -> bool {
        self.public.covers(topic)
    }

    /// Checks a token: its signature against every key that accepts its algorithm (rotation),
    /// then its times and, when configured, audience and issuer.
    pub fn verify(&self, token: &[u8]) -> Result<Grant, Denied> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Denied::Malformed)?;
        for k in self
            .keys
            .iter()
            .filter(|k| k.algorithms.contains(&header.alg))
        {
            let mut v = Validation::new(header.alg);
            v.algorithms = k.algorithms.to_vec();
            v.leeway = 0;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp"]);
            match &self.audience {
                Some(a) => v.set_audience(&[a]),
                None => v.validate_aud = false,
            }
            if let Some(i) = &self.issuer {
                v.set_issuer(&[i]);
            }
            match jsonwebtoken::decode::<Claims>(token, &k.key, &v) {
                Ok(t) => {
                    let c = t.claims;
                    return Ok(Grant {
                        sub: c.sub.map(Into::into),
                        exp: c.exp,
                        topics: Patterns::parse(&c.topics),
                        publish: Patterns::parse(&c.publish),
                    });
                }
                Err(e) => {
                    // Anything but a bad signature is final: times and claims are checked
                    // only once a key's signature held.
                    return Err(match e.kind() {
                        // Another key may have signed it.
                        ErrorKind::InvalidSignature => continue,
                        ErrorKind::ExpiredSignature => Denied::Expired,
                        ErrorKind::ImmatureSignature => Denied::NotYetValid,
                        ErrorKind::InvalidAudience => Denied::WrongAudience,
                        ErrorKind::InvalidIssuer => Denied::WrongIssuer,
                        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                            Denied::BadSignature
                        }
                        _ => Denied::Malformed,
                    });
                }
            }
        }
        Err(Denied::BadSignature)
    }

    /// May this request read `topic`? A public topic needs no token (a token that comes anyway
    /// is still checked, so a bad one is never silently ignored).
    pub fn may_read(&self, token: Option<&[u8]>, topic: &str) -> Result<Option<Grant>, Denied> {
        let grant = token.map(|t| self.verify(t)).transpose()?;
        self.covers(grant.as_ref(), topic)?;
        Ok(grant)
    }

    /// May the holder of `grant` (None: a request without a token) read `topic`? The check
    /// after [`verify`](Self::verify), so a request naming many topics verifies its token once.
    pub fn covers(&self, grant: Option<&Grant>, topic: &str) -> Result<(), Denied> {
        match grant {
            _ if self.is_public(topic) => Ok(()),
            Some(g) if g.can_read(topic) => Ok(()),
            Some(_) => Err(Denied::NotCovered),
            None => Err(Denied::Missing),
        }
    }
}

/// The label of a PEM's first block (`PUBLIC KEY`, `RSA PRIVATE KEY`, ...), as jsonwebtoken
/// reads only that block.
fn pem_label(pem: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(pem).ok()?;
    let rest = &text[text.find("-----BEGIN ")? + "-----BEGIN ".len()..];
    Some(&rest[..rest.find("-----")?])
}

/// The curve of an EC public key in PEM, from the named-curve OID in its SubjectPublicKeyInfo.
fn ec_curve(pem: &[u8]) -> Option<u16> {
    use base64::Engine as _;
    // DER of the OIDs: prime256v1 (1.2.840.10045.3.1.7) and secp384r1 (1.3.132.0.34).
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    const P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let has = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    if has(P256) {
        Some(256)
    } else if has(P384) {
        Some(384)
    } else {
        None
    }
}

/// A PEM public key and the algorithms its type accepts.
fn public_key(pem: &[u8]) -> Result<Key, String> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        // jsonwebtoken parses an RSA key only when a token comes: a key whose body does not
        // parse would refuse every RS*/PS* token without a word about why. Parse the same
        // bytes the same way now.
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        let der = key.try_get_as_bytes().map_err(|e| e.to_string())?;
        if let Err(e) = rsa::PublicKey::from_pkcs1_der(der) {
            return Err(format!(
                "an RSA public key that does not parse ({e}); export it again, e.g. \
                 `openssl pkey -in PRIVATE_KEY -pubout`"
            ));
        }
        return Ok(Key {
            key,
            algorithms: AlgorithmFamily::Rsa.algorithms(),
        });
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // One curve, one algorithm (RFC 7518 §3.4): a P-256 key verifies ES256 only.
        let algorithms: &'static [Algorithm] = match ec_curve(pem) {
            Some(256) => &[Algorithm::ES256],
            Some(384) => &[Algorithm::ES384],
            _ => return Err("an EC key on a curve other than P-256 or P-384".to_string()),
        };
        return Ok(Key { key, algorithms });
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok(Key {
            key,
            algorithms: AlgorithmFamily::Ed.algorithms(),
        });
    }
    Err(
        "not a PEM public key ringcast can use (RSA, EC P-256/P-384 or Ed25519, \
         `-----BEGIN PUBLIC KEY-----`)"
            .to_string(),
    )
}

#[cfg(test)]
mod tests;
