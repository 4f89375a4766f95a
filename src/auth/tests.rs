//! Token vectors: every algorithm, every refusal, each answered with its status and no panic.
//! Tokens are signed here with the test keys in `tests/keys/` (public on purpose).

use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token signed with `alg` by the private key `key` (or the HMAC secret file).
fn sign(alg: Algorithm, key: &str, claims: serde_json::Value) -> Vec<u8> {
    let k = match alg.family() {
        AlgorithmFamily::Hmac => {
            let raw = read(key);
            EncodingKey::from_secret(raw.strip_suffix(b"\n").unwrap_or(&raw)).unwrap()
        }
        AlgorithmFamily::Rsa => EncodingKey::from_rsa_pem(&read(key)).unwrap(),
        AlgorithmFamily::Ec => EncodingKey::from_ec_pem(&read(key)).unwrap(),
        AlgorithmFamily::Ed => EncodingKey::from_ed_pem(&read(key)).unwrap(),
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, &k)
        .unwrap()
        .into_bytes()
}

fn auth(secret: bool, public_keys: &[&str], aud: Option<&str>, iss: Option<&str>) -> Auth {
    Auth::load(&AuthConfig {
        jwt_secret_file: secret.then(|| key_path("hmac.secret")),
        jwt_public_key_files: public_keys.iter().map(|k| key_path(k)).collect(),
        jwt_audience: aud.map(Into::into),
        jwt_issuer: iss.map(Into::into),
        public_topics: vec!["public/*".into()],
    })
    .unwrap()
    .expect("keys configured")
}

fn claims() -> serde_json::Value {
    json!({"exp": now() + 600, "sub": "user-42", "topics": ["chat/*"], "publish": ["chat/42"]})
}

fn b64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[test]
fn every_algorithm_with_its_key() {
    let a = auth(
        true,
        &["rsa.pub", "ec256.pub", "ec384.pub", "ed25519.pub"],
        None,
        None,
    );
    let cases = [
        (Algorithm::HS256, "hmac.secret"),
        (Algorithm::HS384, "hmac.secret"),
        (Algorithm::HS512, "hmac.secret"),
        (Algorithm::RS256, "rsa.key"),
        (Algorithm::RS384, "rsa.key"),
        (Algorithm::RS512, "rsa.key"),
        (Algorithm::PS256, "rsa.key"),
        (Algorithm::PS384, "rsa.key"),
        (Algorithm::PS512, "rsa.key"),
        (Algorithm::ES256, "ec256.key"),
        (Algorithm::ES384, "ec384.key"),
        (Algorithm::EdDSA, "ed25519.key"),
    ];
    for (alg, key) in cases {
        let g = a
            .verify(&sign(alg, key, claims()))
            .unwrap_or_else(|d| panic!("{alg:?}: {d:?}"));
        assert_eq!(g.sub.as_deref(), Some("user-42"), "{alg:?}");
        assert!(g.can_read("chat/7") && !g.can_read("chatroom"), "{alg:?}");
        assert!(
            g.can_publish("chat/42") && !g.can_publish("chat/7"),
            "{alg:?}"
        );
    }
}

#[test]
fn times_audience_and_issuer() {
    let a = auth(true, &[], Some("push"), Some("https://auth.example"));
    let mut c = claims();
    let ok = |c: &serde_json::Value| a.verify(&sign(Algorithm::HS256, "hmac.secret", c.clone()));
    c["aud"] = json!("push");
    c["iss"] = json!("https://auth.example");
    assert!(ok(&c).is_ok());
    let mut expired = c.clone();
    expired["exp"] = json!(now() - 1);
    assert_eq!(ok(&expired), Err(Denied::Expired));
    let mut early = c.clone();
    early["nbf"] = json!(now() + 300);
    assert_eq!(ok(&early), Err(Denied::NotYetValid));
    let mut aud = c.clone();
    aud["aud"] = json!("other");
    assert_eq!(ok(&aud), Err(Denied::WrongAudience));
    let mut iss = c.clone();
    iss["iss"] = json!("https://evil.example");
    assert_eq!(ok(&iss), Err(Denied::WrongIssuer));
    let mut no_exp = c.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(ok(&no_exp), Err(Denied::Malformed));

    // Claims the server was not told to check do not make a token invalid.
    let b = auth(true, &[], None, None);
    let mut c = claims();
    c["aud"] = json!("anyone");
    c["iss"] = json!("anywhere");
    assert!(b.verify(&sign(Algorithm::HS256, "hmac.secret", c)).is_ok());
}

#[test]
fn the_algorithm_comes_from_the_key() {
    let a = auth(false, &["rsa.pub"], None, None);
    // alg: none, unsigned.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg":"none","typ":"JWT"})),
        b64(&claims())
    );
    assert_eq!(a.verify(none.as_bytes()).unwrap_err().status(), 401);
    // HS256 "signed" with the RSA public key's bytes (the classic confusion).
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(&read("rsa.pub")).unwrap(),
    )
    .unwrap();
    assert_eq!(a.verify(forged.as_bytes()), Err(Denied::BadSignature));
    // An EC token against an RSA-only node.
    let ec = sign(Algorithm::ES256, "ec256.key", claims());
    assert_eq!(a.verify(&ec), Err(Denied::BadSignature));
    // Signed by a key that is not configured.
    let other = sign(Algorithm::RS256, "rsa2.key", claims());
    assert_eq!(a.verify(&other), Err(Denied::BadSignature));
}

#[test]
fn rotation_accepts_any_configured_key() {
    let a = auth(false, &["rsa.pub", "rsa2.pub"], None, None);
    for k in ["rsa.key", "rsa2.key"] {
        assert!(
            a.verify(&sign(Algorithm::RS256, k, claims())).is_ok(),
            "{k}"
        );
    }
}

#[test]
fn malformed_tokens_are_401_never_a_panic() {
    let a = auth(true, &["rsa.pub", "ed25519.pub"], None, None);
    let good = sign(Algorithm::HS256, "hmac.secret", claims());
    let mut bad: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b".".to_vec(),
        b"..".to_vec(),
        b"a.b.c".to_vec(),
        b"!!!.???.***".to_vec(),
        format!("{}.{}.sig", b64(&json!({"alg":"HS256"})), "bm90IGpzb24").into_bytes(),
        format!("{}.{}.", b64(&json!("x")), b64(&claims())).into_bytes(),
        vec![0xff; 40],
    ];
    for cut in [1, 10, good.len() / 2, good.len() - 1] {
        bad.push(good[..cut].to_vec());
    }
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 3] ^= 1;
    bad.push(flipped);
    for t in bad {
        let d = a.verify(&t).expect_err(&String::from_utf8_lossy(&t));
        assert_eq!(d.status(), 401, "{d:?}");
    }
}

#[test]
fn reading_needs_a_covering_token_unless_public() {
    let a = auth(true, &[], None, None);
    let t = sign(Algorithm::HS256, "hmac.secret", claims());
    assert!(a.may_read(Some(&t), "chat/1").unwrap().is_some());
    assert_eq!(a.may_read(Some(&t), "news"), Err(Denied::NotCovered));
    assert_eq!(Denied::NotCovered.status(), 403);
    assert_eq!(a.may_read(None, "chat/1"), Err(Denied::Missing));
    assert_eq!(a.may_read(None, "public/x"), Ok(None));
    // A bad token on a public topic is still refused.
    assert_eq!(
        a.may_read(Some(b"x.y.z"), "public/x"),
        Err(Denied::Malformed)
    );
    // The same rule once a token is verified, as a request of many topics checks each.
    let g = a.verify(&t).unwrap();
    assert_eq!(a.covers(Some(&g), "chat/1"), Ok(()));
    assert_eq!(a.covers(Some(&g), "public/x"), Ok(()));
    assert_eq!(a.covers(Some(&g), "news"), Err(Denied::NotCovered));
    assert_eq!(a.covers(None, "public/x"), Ok(()));
    assert_eq!(a.covers(None, "chat/1"), Err(Denied::Missing));
}

#[test]
fn keys_that_do_not_load_say_why() {
    let dir = std::env::temp_dir().join(format!("ringcast-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "tooshort\n").unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let e = Auth::load(&AuthConfig {
        jwt_secret_file: Some(short),
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("--jwt-secret-file") && e.contains("32"), "{e}");
    let e = Auth::load(&AuthConfig {
        jwt_public_key_files: vec![garbage],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("--jwt-public-key-file"), "{e}");
    let e = Auth::load(&AuthConfig {
        jwt_public_key_files: vec![dir.join("missing.pem")],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
    assert!(Auth::load(&AuthConfig::default()).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_float_exp_is_read_as_jsonwebtoken_validates_it() {
    // PyJWT writes `time.time() + 3600` as a float. jsonwebtoken validates it rounded; the
    // grant must end at that same second, or a stream outlives (or undercuts) its token.
    let a = auth(true, &[], None, None);
    let e = now() + 600;
    for (exp, want) in [
        (json!(e as f64 + 0.5), e + 1),
        (json!(e as f64 + 0.4), e),
        (json!(e), e),
    ] {
        let mut c = claims();
        c["exp"] = exp.clone();
        let g = a.verify(&sign(Algorithm::HS256, "hmac.secret", c));
        assert_eq!(g.map(|g| g.exp), Ok(want), "exp {exp}");
    }
    let mut c = claims();
    c["exp"] = json!(now() as f64 - 10.5);
    assert_eq!(
        a.verify(&sign(Algorithm::HS256, "hmac.secret", c)),
        Err(Denied::Expired)
    );
    for bad in [json!(-1.5), json!("1767225600"), json!(null)] {
        let mut c = claims();
        c["exp"] = bad.clone();
        assert_eq!(
            a.verify(&sign(Algorithm::HS256, "hmac.secret", c)),
            Err(Denied::Malformed),
            "exp {bad}"
        );
    }
}

#[test]
fn a_private_key_or_an_rsa_key_that_does_not_parse_is_refused_at_load() {
    let load = |path: PathBuf| {
        Auth::load(&AuthConfig {
            jwt_public_key_files: vec![path],
            ..Default::default()
        })
    };
    // jsonwebtoken takes an RSA private key (PKCS#1 or PKCS#8) as a decoding key and fails
    // only when a token comes; EC and Ed25519 private keys it refuses without saying why.
    for k in [
        "rsa.key",
        "rsa.pkcs1.key",
        "ec256.key",
        "ec384.key",
        "ed25519.key",
    ] {
        let e = load(key_path(k)).unwrap_err();
        assert!(
            e.contains(k) && e.contains("private key") && e.contains("openssl pkey"),
            "{k}: {e}"
        );
    }

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem = |der: &[u8]| {
        let body = b64.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    };
    let text = String::from_utf8(read("rsa.pub")).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = b64.decode(body).unwrap();
    // SubjectPublicKeyInfo: the RSAPublicKey SEQUENCE starts after the BIT STRING's head.
    assert_eq!(der[19..25], [0x03, 0x82, 0x01, 0x0f, 0x00, 0x30]);
    let mut garbled = der.clone();
    garbled[24] = 0x31;
    let dir = std::env::temp_dir().join(format!("ringcast-auth-rsa-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, der) in [
        ("garbled.pub", &garbled[..]),
        ("truncated.pub", &der[..200]),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, pem(der)).unwrap();
        let e = load(path).err();
        assert!(
            e.as_deref().is_some_and(|e| e.contains(name)),
            "{name}: {e:?}"
        );
    }
    assert!(load(key_path("rsa.pub")).unwrap().is_some());
    std::fs::remove_dir_all(&dir).unwrap();
}
