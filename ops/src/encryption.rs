//! Secrets encrypted at rest: kube-apiserver's `EncryptionConfiguration` file
//! (`logbook serve --encryption-provider-config PATH`) turned into the store's value
//! transformers (`logbook_store::transform`), so a Secret is sealed before its event is
//! written and nothing under the data directory holds its values in plaintext.
//!
//! Providers: `aesgcm` (AES-GCM with a 16- or 32-byte key and a random 96-bit nonce per
//! write) and `identity` (no encryption). The first provider's first key seals every write;
//! every key listed anywhere opens values (rotation without downtime). A sealed value is
//! kube's envelope: `k8s:enc:aesgcm:v1:<key name>:` + nonce (12 bytes) + ciphertext and tag,
//! with the object's key (`resource`, namespace, name) as associated data, so one object's
//! ciphertext cannot be passed off as another's.
//!
//! Without a configuration file, `serve` writes `<data-dir>/pki/encryption-config.yaml`
//! (mode 0600) with a random AES-256 key on first start and uses it: a default install
//! never writes a plaintext Secret value. docs/security.md says what that protects.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use logbook_store::{ObjectKey, Opened, TransformError, ValueTransformer, ValueTransforms};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// Every sealed value starts with this (kube's prefix), whatever the provider.
pub const ENVELOPE_PREFIX: &[u8] = b"k8s:enc:";
/// The AES-GCM envelope's prefix; the key name and a `:` follow.
pub const AESGCM_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
/// Largest configuration file read, in bytes.
pub const ENCRYPTION_CONFIG_BYTES_MAX: u64 = 1024 * 1024;
/// Longest key name, in bytes (kube's names are DNS-like; ours also must not hold `:`).
pub const KEY_NAME_BYTES_MAX: usize = 250;
/// The generated configuration, inside the data directory's `pki/`.
pub const DEFAULT_CONFIG_FILE: &str = "encryption-config.yaml";
/// The resource the generated configuration encrypts (the store's name for core Secrets).
pub const SECRETS_RESOURCE: &str = "secrets";

const API_VERSION: &str = "apiserver.config.k8s.io/v1";
const KIND: &str = "EncryptionConfiguration";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    resources: Vec<String>,
    providers: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    aesgcm: Option<KeysEntry>,
    identity: Option<serde::de::IgnoredAny>,
    aescbc: Option<serde::de::IgnoredAny>,
    secretbox: Option<serde::de::IgnoredAny>,
    kms: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysEntry {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    secret: String,
}

/// One provider of a resource's list, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Provider {
    /// Names of its keys, in order.
    AesGcm(Vec<String>),
    Identity,
}

/// Each store resource the configuration lists, with its encryption.
pub type ByResource = Vec<(String, Arc<Encryption>)>;

/// The sealing and opening of one resource's values, as the configuration lists them.
pub struct Encryption {
    providers: Vec<Provider>,
    /// Every AES-GCM key of every provider of this resource, by name.
    keys: HashMap<String, Arc<LessSafeKey>>,
    /// The key that seals new values; `None` when the first provider is `identity`.
    write_key: Option<String>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key names only, never key material.
        f.debug_struct("Encryption")
            .field("providers", &self.providers)
            .field("write_key", &self.write_key)
            .finish_non_exhaustive()
    }
}

/// What the object's ciphertext is bound to.
fn associated_data(key: &ObjectKey) -> Vec<u8> {
    let mut aad =
        Vec::with_capacity(16 + key.resource.len() + key.namespace.len() + key.name.len());
    aad.extend_from_slice(b"logbook\0");
    for part in [&key.resource, &key.namespace, &key.name] {
        aad.extend_from_slice(part.as_bytes());
        aad.push(0);
    }
    aad
}

impl Encryption {
    fn identity_listed(&self) -> bool {
        self.providers.contains(&Provider::Identity)
    }

    /// The key that seals new values (`None`: they are written unencrypted).
    pub fn write_key(&self) -> Option<&str> {
        self.write_key.as_deref()
    }
}

/// Which key a stored value was sealed with: `Some(name)` for an AES-GCM envelope, `None`
/// for a plaintext value. Values of other providers are named by their prefix.
pub fn key_id_of(stored: &[u8]) -> Option<String> {
    if let Some(rest) = stored.strip_prefix(AESGCM_PREFIX) {
        let end = rest
            .iter()
            .take(KEY_NAME_BYTES_MAX + 1)
            .position(|&b| b == b':')?;
        return Some(format!("aesgcm:{}", String::from_utf8_lossy(&rest[..end])));
    }
    if stored.starts_with(ENVELOPE_PREFIX) {
        let rest = &stored[ENVELOPE_PREFIX.len()..];
        let end = rest.iter().take(64).position(|&b| b == b':').unwrap_or(0);
        return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    None
}

impl ValueTransformer for Encryption {
    fn seal(&self, key: &ObjectKey, plain: &[u8]) -> Result<Vec<u8>, TransformError> {
        let Some(name) = &self.write_key else {
            return Ok(plain.to_vec());
        };
        let sealing = self.keys.get(name).ok_or_else(|| {
            TransformError(format!("the write key {name:?} is not loaded (a bug)"))
        })?;
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| {
            TransformError(format!(
                "no random nonce for aesgcm key {name:?}: the system's random source failed"
            ))
        })?;
        let mut out =
            Vec::with_capacity(AESGCM_PREFIX.len() + name.len() + 1 + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(AESGCM_PREFIX);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        let body_at = out.len();
        out.extend_from_slice(plain);
        let mut body = out.split_off(body_at);
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data(key)),
                &mut body,
            )
            .map_err(|_| TransformError(format!("sealing with aesgcm key {name:?} failed")))?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, key: &ObjectKey, stored: &[u8]) -> Result<Opened, TransformError> {
        if let Some(rest) = stored.strip_prefix(AESGCM_PREFIX) {
            let Some(end) = rest
                .iter()
                .take(KEY_NAME_BYTES_MAX + 1)
                .position(|&b| b == b':')
            else {
                return Err(TransformError(
                    "an aesgcm envelope without a key name: the stored value is damaged".into(),
                ));
            };
            let name = String::from_utf8_lossy(&rest[..end]).into_owned();
            let Some(opening) = self.keys.get(&name) else {
                return Err(TransformError(format!(
                    "encrypted with aesgcm key {name:?}, which the encryption configuration \
                     (--encryption-provider-config) does not list"
                )));
            };
            let after = &rest[end + 1..];
            if after.len() < NONCE_LEN {
                return Err(TransformError(format!(
                    "an aesgcm envelope of key {name:?} cut short: the stored value is damaged"
                )));
            }
            let (nonce, sealed) = after.split_at(NONCE_LEN);
            let nonce: [u8; NONCE_LEN] = nonce
                .try_into()
                .map_err(|_| TransformError(format!("a short nonce under aesgcm key {name:?}")))?;
            let mut body = sealed.to_vec();
            let plain_len = opening
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(associated_data(key)),
                    &mut body,
                )
                .map_err(|_| {
                    TransformError(format!(
                        "decryption with aesgcm key {name:?} failed: the stored value was \
                         altered, or sealed for another object or with another secret under \
                         that key name"
                    ))
                })?
                .len();
            body.truncate(plain_len);
            return Ok(Opened {
                plain: body,
                stale: self.write_key.as_deref() != Some(name.as_str()),
            });
        }
        if stored.starts_with(ENVELOPE_PREFIX) {
            let provider = key_id_of(stored).unwrap_or_default();
            return Err(TransformError(format!(
                "encrypted by provider {provider:?}, which this server does not support"
            )));
        }
        if !self.identity_listed() {
            return Err(TransformError(
                "stored unencrypted, and the encryption configuration lists no identity \
                 provider to read it"
                    .into(),
            ));
        }
        Ok(Opened {
            plain: stored.to_vec(),
            stale: self.write_key.is_some(),
        })
    }
}

fn aes_key(resource: &str, k: &KeyEntry) -> Result<LessSafeKey> {
    let secret = base64::engine::general_purpose::STANDARD
        .decode(k.secret.trim())
        .map_err(|_| {
            anyhow::anyhow!(
                "{resource}: aesgcm key {:?}: secret is not base64 (generate one with `head -c 32 /dev/urandom | base64`)",
                k.name
            )
        })?;
    let alg = match secret.len() {
        16 => &AES_128_GCM,
        32 => &AES_256_GCM,
        n => bail!(
            "{resource}: aesgcm key {:?}: secret is {n} bytes; it must be 32 (AES-256) or 16 (AES-128)",
            k.name
        ),
    };
    let unbound = UnboundKey::new(alg, &secret)
        .map_err(|_| anyhow::anyhow!("{resource}: aesgcm key {:?} is not usable", k.name))?;
    Ok(LessSafeKey::new(unbound))
}

/// Parses an `EncryptionConfiguration` (YAML or JSON) into transformers by store resource.
///
/// # Errors
/// Anything kube-apiserver would refuse, plus the providers Logbook does not implement
/// (`aescbc`, `secretbox`, `kms`) and wildcard resources, each named.
pub fn parse(text: &str) -> Result<(ValueTransforms, ByResource)> {
    let file: ConfigFile =
        serde_saphyr::from_str(text).context("not an EncryptionConfiguration")?;
    if file.api_version != API_VERSION || file.kind != KIND {
        bail!(
            "expected apiVersion {API_VERSION} and kind {KIND}, found {} {}",
            file.api_version,
            file.kind
        );
    }
    let mut transforms = ValueTransforms::new();
    let mut listed = Vec::new();
    let mut seen_resources = HashSet::new();
    for entry in &file.resources {
        if entry.resources.is_empty() || entry.providers.is_empty() {
            bail!("every resources entry needs at least one resource and one provider");
        }
        let label = entry.resources.join(",");
        let mut providers = Vec::new();
        let mut keys: HashMap<String, Arc<LessSafeKey>> = HashMap::new();
        for p in &entry.providers {
            let set = [
                p.aesgcm.is_some(),
                p.identity.is_some(),
                p.aescbc.is_some(),
                p.secretbox.is_some(),
                p.kms.is_some(),
            ];
            if set.iter().filter(|b| **b).count() != 1 {
                bail!("{label}: each provider entry names exactly one provider");
            }
            if p.aescbc.is_some() || p.secretbox.is_some() || p.kms.is_some() {
                bail!("{label}: only the aesgcm and identity providers are supported");
            }
            match &p.aesgcm {
                Some(k) => {
                    if k.keys.is_empty() {
                        bail!("{label}: an aesgcm provider needs at least one key");
                    }
                    let mut names = Vec::new();
                    for key in &k.keys {
                        if key.name.is_empty()
                            || key.name.len() > KEY_NAME_BYTES_MAX
                            || key.name.contains(':')
                        {
                            bail!(
                                "{label}: key name {:?} must be 1 to {KEY_NAME_BYTES_MAX} bytes without ':'",
                                key.name
                            );
                        }
                        if keys.contains_key(&key.name) {
                            bail!("{label}: key name {:?} is listed twice", key.name);
                        }
                        keys.insert(key.name.clone(), Arc::new(aes_key(&label, key)?));
                        names.push(key.name.clone());
                    }
                    providers.push(Provider::AesGcm(names));
                }
                None => providers.push(Provider::Identity),
            }
        }
        let write_key = match providers.first() {
            Some(Provider::AesGcm(names)) => names.first().cloned(),
            _ => None,
        };
        let enc = Arc::new(Encryption {
            providers,
            keys,
            write_key,
        });
        for r in &entry.resources {
            if r.contains('*') {
                bail!("{r:?}: wildcard resources are not supported; name each resource");
            }
            let store = crate::retention::store_resource(r)
                .with_context(|| format!("resource {r:?} of the encryption configuration"))?;
            if !seen_resources.insert(store.clone()) {
                bail!("resource {r:?} is listed twice");
            }
            transforms.insert(store.clone(), enc.clone() as Arc<dyn ValueTransformer>);
            listed.push((store, enc.clone()));
        }
    }
    Ok((transforms, listed))
}

/// Reads and parses a configuration file.
///
/// # Errors
/// An unreadable, oversized or invalid file, naming its path.
pub fn load(path: &Path) -> Result<(ValueTransforms, ByResource)> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > ENCRYPTION_CONFIG_BYTES_MAX {
        bail!(
            "{}: {len} bytes, above the limit of {ENCRYPTION_CONFIG_BYTES_MAX}",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("encryption configuration {}", path.display()))
}

/// The configuration a default install generates: Secrets under one random AES-256 key,
/// plaintext still readable (a store written before encryption existed).
pub fn generated_config(key_name: &str, secret: &[u8; 32]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    format!(
        "# Generated by `logbook serve` on first start (no --encryption-provider-config).\n\
         # Anyone holding this file can decrypt the Secrets in this data directory and in\n\
         # copies of it: keep a copy apart from backups (docs/security.md).\n\
         apiVersion: {API_VERSION}\n\
         kind: {KIND}\n\
         resources:\n\
         \x20 - resources:\n\
         \x20     - {SECRETS_RESOURCE}\n\
         \x20   providers:\n\
         \x20     - aesgcm:\n\
         \x20         keys:\n\
         \x20           - name: {key_name}\n\
         \x20             secret: {b64}\n\
         \x20     - identity: {{}}\n"
    )
}

/// The configuration `serve` uses: `--encryption-provider-config` when given, else
/// `<data-dir>/pki/encryption-config.yaml`, generated with a random key on first start.
///
/// # Errors
/// An invalid file, or no randomness for a new key.
pub fn for_serve(data_dir: &Path, config: Option<&Path>) -> Result<ValueTransforms> {
    let path = match config {
        Some(p) => p.to_path_buf(),
        None => {
            let path = data_dir.join("pki").join(DEFAULT_CONFIG_FILE);
            if !path.exists() {
                let rng = SystemRandom::new();
                let mut secret = [0u8; 32];
                let mut id = [0u8; 4];
                rng.fill(&mut secret)
                    .and_then(|()| rng.fill(&mut id))
                    .map_err(|_| anyhow::anyhow!("no randomness for a new encryption key"))?;
                let name = format!("generated-{}", hex(&id));
                crate::pki::write_private(&path, &generated_config(&name, &secret))?;
                tracing::info!(path = %path.display(), key = %name, "generated an encryption key for Secrets");
            }
            path
        }
    };
    let (transforms, listed) = load(&path)?;
    for (resource, enc) in &listed {
        tracing::info!(
            config = %path.display(),
            %resource,
            write_key = enc.write_key().unwrap_or("identity (plaintext)"),
            "encryption at rest"
        );
    }
    Ok(transforms)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n{providers}"
        )
    }

    fn aes(name: &str, byte: u8) -> String {
        let secret = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        format!(
            "      - aesgcm:\n          keys:\n            - name: {name}\n              secret: {secret}\n"
        )
    }

    fn secrets(text: &str) -> Arc<Encryption> {
        let (_, listed) = parse(text).expect("valid configuration");
        listed
            .into_iter()
            .find(|(r, _)| r == "secrets")
            .expect("secrets listed")
            .1
    }

    fn key() -> ObjectKey {
        ObjectKey::new("secrets", "default", "db")
    }

    const PLAIN: &[u8] = br#"{"metadata":{"name":"db"},"data":{"password":"aHVudGVyMg=="}}"#;

    #[test]
    fn a_sealed_value_names_its_key_hides_the_plaintext_and_opens_to_the_same_bytes() {
        let enc = secrets(&config(&aes("a", 1)));
        let sealed = enc.seal(&key(), PLAIN).expect("seals");
        assert!(
            sealed.starts_with(b"k8s:enc:aesgcm:v1:a:"),
            "kube's envelope with the key name"
        );
        assert!(
            !sealed.windows(8).any(|w| w == b"aHVudGVy"),
            "the plaintext must not appear in the sealed value"
        );
        assert_eq!(key_id_of(&sealed).as_deref(), Some("aesgcm:a"));
        let opened = enc.open(&key(), &sealed).expect("opens");
        assert_eq!(opened.plain, PLAIN);
        assert!(!opened.stale, "sealed under the write key");
        let again = enc.seal(&key(), PLAIN).expect("seals");
        assert_ne!(sealed, again, "a fresh nonce per write");
    }

    #[test]
    fn an_altered_value_is_an_error_naming_the_key_never_garbage() {
        let enc = secrets(&config(&aes("a", 1)));
        let sealed = enc.seal(&key(), PLAIN).expect("seals");
        for at in [sealed.len() - 1, sealed.len() - 20, AESGCM_PREFIX.len() + 3] {
            let mut bad = sealed.clone();
            bad[at] ^= 0x01;
            let err = enc
                .open(&key(), &bad)
                .expect_err("tampering must be detected");
            assert!(err.0.contains("\"a\""), "names the key id: {err}");
        }
        let cut = &sealed[..AESGCM_PREFIX.len() + 5];
        assert!(enc.open(&key(), cut).is_err(), "a cut envelope is an error");
        let other = ObjectKey::new("secrets", "default", "other");
        let err = enc
            .open(&other, &sealed)
            .expect_err("another object's ciphertext must not open");
        assert!(err.0.contains("another object"), "{err}");
    }

    #[test]
    fn a_value_under_an_unknown_key_id_is_an_error_naming_it() {
        let a = secrets(&config(&aes("a", 1)));
        let b = secrets(&config(&aes("b", 2)));
        let sealed = a.seal(&key(), PLAIN).expect("seals");
        let err = b.open(&key(), &sealed).expect_err("b does not hold a");
        assert!(err.0.contains("aesgcm key \"a\""), "{err}");
        assert!(err.0.contains("does not list"), "{err}");
        let same_name = secrets(&config(&aes("a", 9)));
        assert!(
            same_name.open(&key(), &sealed).is_err(),
            "another secret under the same name must fail authentication"
        );
    }

    #[test]
    fn every_listed_key_opens_and_only_the_first_one_writes() {
        let a = secrets(&config(&aes("a", 1)));
        let ba = secrets(&config(&format!("{}{}", aes("b", 2), aes("a", 1))));
        let old = a.seal(&key(), PLAIN).expect("seals");
        let opened = ba.open(&key(), &old).expect("a is still listed");
        assert_eq!(opened.plain, PLAIN);
        assert!(opened.stale, "written under a key that no longer writes");
        let new = ba.seal(&key(), PLAIN).expect("seals");
        assert_eq!(key_id_of(&new).as_deref(), Some("aesgcm:b"));
        assert!(!ba.open(&key(), &new).expect("opens").stale);
    }

    #[test]
    fn plaintext_is_read_only_when_identity_is_listed_and_is_stale_when_writes_encrypt() {
        let with_identity = secrets(&config(&format!("{}      - identity: {{}}\n", aes("a", 1))));
        let opened = with_identity
            .open(&key(), PLAIN)
            .expect("identity reads it");
        assert_eq!(opened.plain, PLAIN);
        assert!(opened.stale);
        let without = secrets(&config(&aes("a", 1)));
        let err = without
            .open(&key(), PLAIN)
            .expect_err("no identity provider");
        assert!(err.0.contains("identity"), "{err}");
        let identity_first = secrets(&config(&format!("      - identity: {{}}\n{}", aes("a", 1))));
        assert_eq!(identity_first.seal(&key(), PLAIN).expect("writes"), PLAIN);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("kind: Nope\napiVersion: v1\n", "expected apiVersion"),
            (
                &config("      - aescbc:\n          keys: []\n"),
                "only the aesgcm",
            ),
            (
                &config(
                    "      - aesgcm:\n          keys:\n            - name: a\n              secret: c2hvcnQ=\n",
                ),
                "must be 32",
            ),
            (
                &config(
                    "      - aesgcm:\n          keys:\n            - name: a\n              secret: '!!'\n",
                ),
                "not base64",
            ),
            (&config(&format!("{}{}", aes("a", 1), aes("a", 2))), "twice"),
            (
                &config("      - aesgcm:\n          keys: []\n"),
                "at least one key",
            ),
            (&config(&aes("a:b", 1)), "without ':'"),
        ];
        for (text, want) in cases {
            let err = format!("{:#}", parse(text).expect_err(text));
            assert!(err.contains(want), "{text}\n→ {err}\n(wanted {want:?})");
        }
        let wildcard = config(&aes("a", 1)).replace("[secrets]", "['*.*']");
        assert!(format!("{:#}", parse(&wildcard).expect_err("wildcard")).contains("wildcard"));
    }

    #[test]
    fn the_generated_configuration_parses_and_encrypts_secrets_only() {
        let text = generated_config("generated-0a0b", &[7u8; 32]);
        let (transforms, _) = parse(&text).expect("parses");
        assert!(transforms.get("secrets").is_some());
        assert!(transforms.get("configmaps").is_none());
        let enc = secrets(&text);
        assert_eq!(enc.write_key(), Some("generated-0a0b"));
        assert!(
            enc.open(&key(), PLAIN).is_ok(),
            "plaintext from before stays readable"
        );
    }

    #[test]
    fn resources_of_other_groups_map_to_store_names() {
        let text = config(&aes("a", 1)).replace("[secrets]", "[secrets, deployments.apps]");
        let (transforms, _) = parse(&text).expect("parses");
        assert!(transforms.get("apps/deployments").is_some());
    }
}
