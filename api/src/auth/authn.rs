//! Authentication: who a request comes from.
//!
//! In order: the TLS client certificate (verified against the cluster CA by rustls; CN is
//! the user, each O a group), then an `Authorization: Bearer` token — a bootstrap token
//! (`<id>.<secret>`, checked against its Secret in `kube-system`) or a ServiceAccount JWT
//! signed with the service-account key ([`TokenSigner`]: ES256, checked for issuer,
//! audience, expiry, and that the ServiceAccount — and the pod, Secret or Node it is bound
//! to — still exists with the same uid). A bad token is a 401 even when anonymous requests
//! are allowed; no credentials at all is `system:anonymous` only when enabled.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use logbook_store::{EventLog, ObjectKey};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use crate::Identity;
use crate::error::{ApiError, from_store};
use crate::object::decode_stored;

/// The issuer written into ServiceAccount tokens and served by OIDC discovery, unless
/// `--service-account-issuer` says otherwise (kube-apiserver's usual value).
pub const SERVICE_ACCOUNT_ISSUER_DEFAULT: &str = "https://kubernetes.default.svc.cluster.local";
/// A TokenRequest's lifetime when it names none (kube: 1 hour).
pub const TOKEN_EXPIRATION_SECONDS_DEFAULT: i64 = 3_600;
/// The shortest lifetime a TokenRequest may ask for (kube: 10 minutes).
pub const TOKEN_EXPIRATION_SECONDS_MIN: i64 = 600;
/// The longest lifetime a TokenRequest may ask for (kube: 2^32 seconds).
pub const TOKEN_EXPIRATION_SECONDS_MAX: i64 = 1 << 32;
/// Longest bearer token read from a request, in bytes (longer: 401 without parsing).
pub const BEARER_TOKEN_BYTES_MAX: usize = 16 * 1024;
/// Tokens whose signature and claims were checked, kept so a token is verified once: the
/// liveness of its ServiceAccount is still checked on every request.
pub const VERIFIED_TOKENS_CACHED_MAX: usize = 4_096;
/// Group every authenticated identity is in.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// The service-account signing key: signs TokenRequest tokens and verifies every JWT.
pub struct TokenSigner {
    key: EcdsaKeyPair,
    /// `kid`: base64url(sha256(the public key's SubjectPublicKeyInfo)), as kube derives it.
    pub key_id: String,
    pub issuer: String,
    /// The audiences the API server accepts (`--api-audiences`; the issuer by default).
    pub api_audiences: Vec<String>,
    rng: SystemRandom,
    verified: Mutex<VerifiedCache>,
}

#[derive(Default)]
struct VerifiedCache {
    map: std::collections::HashMap<String, (Claims, Instant)>,
}

/// What a verified ServiceAccount token says.
#[derive(Clone, Debug)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// The object the token is bound to: (kind, name, uid).
    pub bound: Option<(String, String, String)>,
    pub audiences: Vec<String>,
    pub expires_unix: i64,
    pub token_id: String,
}

/// DER prefix of a P-256 SubjectPublicKeyInfo, before the 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn unauthorized() -> ApiError {
    ApiError::new(401, "Unauthorized", "Unauthorized")
}

impl TokenSigner {
    /// A signer from a PKCS#8 (DER) P-256 private key.
    ///
    /// # Errors
    /// A key that is not a P-256 PKCS#8 key.
    pub fn from_pkcs8(
        der: &[u8],
        issuer: &str,
        api_audiences: Vec<String>,
    ) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| format!("the service-account key is not a P-256 PKCS#8 key: {e}"))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(key.public_key().as_ref());
        let key_id = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        let api_audiences = if api_audiences.is_empty() {
            vec![issuer.to_string()]
        } else {
            api_audiences
        };
        Ok(TokenSigner {
            key,
            key_id,
            issuer: issuer.to_string(),
            api_audiences,
            rng,
            verified: Mutex::new(VerifiedCache::default()),
        })
    }

    /// A fresh random key (tests, and servers started without a key file).
    ///
    /// # Errors
    /// The system random source failing.
    pub fn generate_pkcs8() -> Result<Vec<u8>, String> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map(|d| d.as_ref().to_vec())
        .map_err(|e| format!("generating a key: {e}"))
    }

    /// The public key as a JSON Web Key (for `/openid/v1/jwks`).
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        json!({"use": "sig", "kty": "EC", "kid": self.key_id, "crv": "P-256", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)})
    }

    /// Signs `claims` as a compact JWS.
    ///
    /// # Errors
    /// The signature failing (the random source).
    pub fn sign(&self, claims: &Value) -> Result<String, ApiError> {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let mut out = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default())
        );
        let sig = self
            .key
            .sign(&self.rng, out.as_bytes())
            .map_err(|_| ApiError::internal("signing the token failed"))?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        Ok(out)
    }

    /// The claims of a token this key signed for one of `audiences`, if it is well formed,
    /// correctly signed, issued by us and not expired; `None` otherwise.
    pub fn verify(&self, token: &str, audiences: &[String]) -> Option<Claims> {
        let now = now_unix();
        if let Ok(cache) = self.verified.lock()
            && let Some((c, _)) = cache.map.get(token)
        {
            return (c.expires_unix > now && c.audiences.iter().any(|a| audiences.contains(a)))
                .then(|| c.clone());
        }
        let c = self.verify_uncached(token, now)?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.map.len() >= VERIFIED_TOKENS_CACHED_MAX {
                // Drop the expired, then the oldest half.
                cache.map.retain(|_, (c, _)| c.expires_unix > now);
                if cache.map.len() >= VERIFIED_TOKENS_CACHED_MAX {
                    let mut ages: Vec<Instant> = cache.map.values().map(|(_, t)| *t).collect();
                    ages.sort();
                    let cut = ages[ages.len() / 2];
                    cache.map.retain(|_, (_, t)| *t > cut);
                }
            }
            cache
                .map
                .insert(token.to_string(), (c.clone(), Instant::now()));
        }
        c.audiences
            .iter()
            .any(|a| audiences.contains(a))
            .then_some(c)
    }

    fn verify_uncached(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "ES256" {
            return None;
        }
        if let Some(kid) = header.get("kid").and_then(Value::as_str)
            && kid != self.key_id
        {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(&token.as_bytes()[..h.len() + 1 + p.len()], &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        if claims.get("iss")?.as_str()? != self.issuer {
            return None;
        }
        let exp = claims.get("exp")?.as_i64()?;
        if exp <= now {
            return None;
        }
        if claims
            .get("nbf")
            .and_then(Value::as_i64)
            .is_some_and(|n| n > now + 60)
        {
            return None;
        }
        let audiences: Vec<String> = match claims.get("aud")? {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => return None,
        };
        let k = claims.get("kubernetes.io")?;
        let sa = k.get("serviceaccount")?;
        let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).map(str::to_string);
        let bound = ["pod", "secret", "node"].iter().find_map(|kind| {
            let b = k.get(*kind)?;
            Some((
                kind.to_string(),
                s(b, "name")?,
                s(b, "uid").unwrap_or_default(),
            ))
        });
        Some(Claims {
            namespace: s(k, "namespace")?,
            service_account: s(sa, "name")?,
            service_account_uid: s(sa, "uid")?,
            bound,
            audiences,
            expires_unix: exp,
            token_id: s(&claims, "jti").unwrap_or_default(),
        })
    }
}

/// The stored object's uid, if the object exists.
async fn stored_uid(
    log: &EventLog,
    resource: &str,
    ns: &str,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let key = ObjectKey::new(resource, ns, name);
    match log.get(&key).await.map_err(from_store)? {
        None => Ok(None),
        Some(cur) => {
            let obj = decode_stored(&cur.object, cur.position.0)?;
            Ok(Some(
                obj.get("metadata")
                    .and_then(|m| m.get("uid"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ))
        }
    }
}

/// The identity a ServiceAccount token stands for, if the token is valid for `audiences`
/// and what it is bound to still exists.
///
/// # Errors
/// A store failure.
pub async fn service_account_identity(
    signer: &TokenSigner,
    log: &EventLog,
    token: &str,
    audiences: &[String],
) -> Result<Option<(Identity, Claims)>, ApiError> {
    let Some(c) = signer.verify(token, audiences) else {
        return Ok(None);
    };
    if stored_uid(log, "serviceaccounts", &c.namespace, &c.service_account)
        .await?
        .as_deref()
        != Some(c.service_account_uid.as_str())
    {
        return Ok(None);
    }
    let mut extra = BTreeMap::new();
    if let Some((kind, name, uid)) = &c.bound {
        let (resource, ns) = match kind.as_str() {
            "pod" => ("pods", c.namespace.as_str()),
            "secret" => ("secrets", c.namespace.as_str()),
            _ => ("nodes", ""),
        };
        match stored_uid(log, resource, ns, name).await? {
            Some(u) if uid.is_empty() || &u == uid => {}
            _ => return Ok(None),
        }
        if kind == "pod" {
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_string(),
                vec![name.clone()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_string(),
                vec![uid.clone()],
            );
        }
    }
    if !c.token_id.is_empty() {
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!("JTI={}", c.token_id)],
        );
    }
    let identity = Identity {
        user: format!(
            "system:serviceaccount:{}:{}",
            c.namespace, c.service_account
        ),
        uid: c.service_account_uid.clone(),
        groups: vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{}", c.namespace),
            AUTHENTICATED_GROUP.to_string(),
        ],
        extra,
        ..Identity::anonymous()
    };
    Ok(Some((identity, c)))
}

/// Whether `token` has a bootstrap token's shape: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn bootstrap_parts(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The identity of a bootstrap token (`system:bootstrap:<id>`), if its Secret
/// `kube-system/bootstrap-token-<id>` exists, matches, allows authentication and has not
/// expired.
///
/// # Errors
/// A store failure.
pub async fn bootstrap_identity(log: &EventLog, token: &str) -> Result<Option<Identity>, ApiError> {
    let Some((id, secret)) = bootstrap_parts(token) else {
        return Ok(None);
    };
    let key = ObjectKey::new("secrets", "kube-system", format!("bootstrap-token-{id}"));
    let Some(cur) = log.get(&key).await.map_err(from_store)? else {
        return Ok(None);
    };
    let obj = decode_stored(&cur.object, cur.position.0)?;
    if obj.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token") {
        return Ok(None);
    }
    let field = |k: &str| -> Option<String> {
        let d = obj.get("data")?.get(k)?.as_str()?;
        String::from_utf8(STANDARD.decode(d).ok()?).ok()
    };
    if obj
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some()
    {
        return Ok(None);
    }
    if field("token-id").as_deref() != Some(id)
        || !constant_time_eq(
            field("token-secret").unwrap_or_default().as_bytes(),
            secret.as_bytes(),
        )
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return Ok(None);
    }
    if let Some(exp) = field("expiration") {
        match exp.parse::<jiff::Timestamp>() {
            Ok(t) if t > jiff::Timestamp::now() => {}
            _ => return Ok(None),
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    for g in field("auth-extra-groups").unwrap_or_default().split(',') {
        let g = g.trim();
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
            groups.push(g.to_string());
        }
    }
    groups.push(AUTHENTICATED_GROUP.to_string());
    Ok(Some(Identity {
        user: format!("system:bootstrap:{id}"),
        groups,
        ..Identity::anonymous()
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The identity behind a bearer token (bootstrap or ServiceAccount), or `None`.
///
/// # Errors
/// A store failure.
pub async fn token_identity(
    signer: Option<&TokenSigner>,
    log: &EventLog,
    token: &str,
    audiences: Option<&[String]>,
) -> Result<Option<Identity>, ApiError> {
    if token.len() > BEARER_TOKEN_BYTES_MAX {
        return Ok(None);
    }
    if bootstrap_parts(token).is_some() {
        return bootstrap_identity(log, token).await;
    }
    let Some(signer) = signer else {
        return Ok(None);
    };
    let auds = audiences.unwrap_or(&signer.api_audiences);
    Ok(service_account_identity(signer, log, token, auds)
        .await?
        .map(|(i, _)| i))
}

/// The bearer token of a request, if it sent one.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<Result<&str, ApiError>> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?;
    let Ok(s) = v.to_str() else {
        return Some(Err(unauthorized()));
    };
    let (scheme, token) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Basic and other schemes are not supported: unauthenticated, as kube treats them.
        return Some(Err(unauthorized()));
    }
    let token = token.trim();
    if token.is_empty() {
        return Some(Err(unauthorized()));
    }
    Some(Ok(token))
}

/// Answers 401 `Unauthorized`.
pub fn unauthorized_error() -> ApiError {
    unauthorized()
}

/// How long a clock skew is tolerated on a token's `nbf`.
pub const TOKEN_NOT_BEFORE_LEEWAY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> TokenSigner {
        let der = TokenSigner::generate_pkcs8().expect("a key");
        TokenSigner::from_pkcs8(&der, "https://issuer.test", vec![]).expect("a signer")
    }

    fn claims(exp: i64, aud: &str) -> Value {
        json!({"iss": "https://issuer.test", "aud": [aud], "exp": exp, "iat": now_unix(),
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"}}})
    }

    #[test]
    fn a_signed_token_verifies_for_its_audience_only() {
        let s = signer();
        let t = s
            .sign(&claims(now_unix() + 600, "https://issuer.test"))
            .expect("signed");
        let c = s
            .verify(&t, &["https://issuer.test".into()])
            .expect("valid");
        assert_eq!(
            (c.namespace.as_str(), c.service_account.as_str()),
            ("ns", "sa")
        );
        assert!(s.verify(&t, &["other".into()]).is_none());
    }

    #[test]
    fn expired_tampered_and_foreign_tokens_are_refused() {
        let s = signer();
        let aud = vec!["https://issuer.test".to_string()];
        let expired = s
            .sign(&claims(now_unix() - 1, "https://issuer.test"))
            .expect("signed");
        assert!(s.verify(&expired, &aud).is_none());
        let good = s
            .sign(&claims(now_unix() + 600, "https://issuer.test"))
            .expect("signed");
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&json!({"iss": "https://issuer.test", "aud": aud, "exp": now_unix() + 600,
                "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "admin", "uid": "x"}}}))
            .expect("json"),
        );
        parts[1] = forged;
        assert!(s.verify(&parts.join("."), &aud).is_none());
        let other = signer();
        assert!(other.verify(&good, &aud).is_none(), "another key's token");
        assert!(s.verify("not.a.token", &aud).is_none());
        assert!(s.verify("", &aud).is_none());
    }

    #[test]
    fn bootstrap_tokens_have_their_shape() {
        assert!(bootstrap_parts("abcdef.0123456789abcdef").is_some());
        assert!(bootstrap_parts("abcdef.0123456789abcde").is_none());
        assert!(bootstrap_parts("ABCDEF.0123456789abcdef").is_none());
        assert!(bootstrap_parts("eyJhbGciOiJFUzI1NiJ9.e30.sig").is_none());
    }

    #[test]
    fn the_jwk_carries_the_key_id_and_the_point() {
        let s = signer();
        let k = s.jwk();
        assert_eq!(k["kid"], json!(s.key_id));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(k["x"].as_str().expect("x"))
                .expect("b64")
                .len(),
            32
        );
    }
}
