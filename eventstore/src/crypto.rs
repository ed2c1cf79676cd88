//! Encryption at rest of personal data, with one data key per subject (crypto-shredding).
//!
//! Domains declare which event fields are personal (`triad_domain::personal::ProtectedFields`).
//! On append those fields are replaced by `"enc:v1:<base64(nonce | AES-256-GCM ciphertext)>"`,
//! sealed with the subject's data key and the subject id as associated data (a ciphertext
//! moved to another patient does not open). Data keys are random, wrapped with the master key
//! (TRIAD_MASTER_KEY) and stored in `subject_keys`. Erasure destroys the wrapped key: the
//! events stay, and their personal fields read back as `null` with `shredded` set.

use crate::db::Db;
use crate::error::StoreError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use parking_lot::Mutex;
use rand::RngCore;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use triad_domain::personal::ProtectedFields;

const PREFIX: &str = "enc:v1:";
/// Unwrapped keys are kept this long; a key shredded by another replica stops opening data
/// here at most this much later (this replica's own erasures take effect at once).
const KEY_CACHE_TTL: Duration = Duration::from_secs(30);
/// Development master key, used only when TRIAD_MASTER_KEY is unset (with a warning).
const DEV_MASTER_KEY: [u8; 32] = *b"triad-development-master-key-32b";

#[derive(Clone)]
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// 32 bytes as 64 hex digits or as base64.
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let raw = raw.trim();
        let bytes = hex::decode(raw)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(raw).ok())
            .ok_or_else(|| {
                StoreError::Crypto("TRIAD_MASTER_KEY must be 32 bytes as hex or base64".into())
            })?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| StoreError::Crypto("TRIAD_MASTER_KEY must be exactly 32 bytes".into()))?;
        Ok(MasterKey(bytes.into()))
    }

    /// From TRIAD_MASTER_KEY, or the development key (and a warning) when it is unset.
    pub fn from_env() -> Result<Self, StoreError> {
        match std::env::var("TRIAD_MASTER_KEY") {
            Ok(raw) => Self::parse(&raw),
            Err(_) => {
                // Once per process: a CLI command opens the store more than once.
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!(
                        "TRIAD_MASTER_KEY is unset: using the built-in development master key"
                    )
                });
                Ok(MasterKey(DEV_MASTER_KEY.into()))
            }
        }
    }
}

fn seal_bytes(cipher: &Aes256Gcm, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| StoreError::Crypto("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend(ct);
    Ok(out)
}

fn open_bytes(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(12);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
}

#[derive(Clone)]
enum Cached {
    Key(Arc<Aes256Gcm>, Instant),
    Shredded,
}

/// Per-subject data keys: created on first write, cached, destroyed on erasure.
pub struct Keyring {
    db: Db,
    master: Aes256Gcm,
    cache: Mutex<HashMap<String, Cached>>,
}

impl Keyring {
    pub(crate) fn new(db: Db, master: &MasterKey) -> Self {
        Keyring {
            db,
            master: Aes256Gcm::new(&master.0),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, subject: &str) -> Option<Cached> {
        match self.cache.lock().get(subject) {
            Some(Cached::Key(k, at)) if at.elapsed() < KEY_CACHE_TTL => {
                Some(Cached::Key(k.clone(), *at))
            }
            Some(Cached::Shredded) => Some(Cached::Shredded),
            _ => None,
        }
    }

    async fn fetch(&self, subject: &str) -> Result<Option<Option<Vec<u8>>>, StoreError> {
        const SQL: &str = "SELECT wrapped FROM subject_keys WHERE subject_id = $1";
        Ok(match &self.db {
            Db::Postgres(p) => {
                sqlx::query_scalar::<_, Option<Vec<u8>>>(SQL)
                    .bind(subject)
                    .fetch_optional(p)
                    .await?
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar::<_, Option<Vec<u8>>>(SQL)
                    .bind(subject)
                    .fetch_optional(p)
                    .await?
            }
        })
    }

    fn unwrap_key(&self, subject: &str, wrapped: &[u8]) -> Result<Arc<Aes256Gcm>, StoreError> {
        let raw = open_bytes(&self.master, wrapped, subject.as_bytes()).ok_or_else(|| {
            StoreError::Crypto(format!(
                "the data key of {subject} does not open with this master key"
            ))
        })?;
        let key: [u8; 32] = raw
            .try_into()
            .map_err(|_| StoreError::Crypto("bad data key length".into()))?;
        let cipher = Arc::new(Aes256Gcm::new(&key.into()));
        self.cache.lock().insert(
            subject.to_string(),
            Cached::Key(cipher.clone(), Instant::now()),
        );
        Ok(cipher)
    }

    /// The subject's key for reading; `None` when it was shredded (or never existed).
    pub async fn for_read(&self, subject: &str) -> Result<Option<Arc<Aes256Gcm>>, StoreError> {
        match self.cached(subject) {
            Some(Cached::Key(k, _)) => return Ok(Some(k)),
            Some(Cached::Shredded) => return Ok(None),
            None => {}
        }
        match self.fetch(subject).await? {
            Some(Some(wrapped)) => self.unwrap_key(subject, &wrapped).map(Some),
            Some(None) => {
                self.cache
                    .lock()
                    .insert(subject.to_string(), Cached::Shredded);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// The subject's key for writing, created on first use; erased subjects are refused.
    pub async fn for_write(&self, subject: &str) -> Result<Arc<Aes256Gcm>, StoreError> {
        if let Some(key) = self.for_read(subject).await? {
            return Ok(key);
        }
        if matches!(self.fetch(subject).await?, Some(None)) {
            return Err(StoreError::Shredded(subject.to_string()));
        }
        let mut data_key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut data_key);
        let wrapped = seal_bytes(&self.master, &data_key, subject.as_bytes())?;
        const SQL: &str = "INSERT INTO subject_keys (subject_id, wrapped) VALUES ($1, $2) ON CONFLICT (subject_id) DO NOTHING";
        match &self.db {
            Db::Postgres(p) => sqlx::query(SQL)
                .bind(subject)
                .bind(&wrapped)
                .execute(p)
                .await
                .map(drop)?,
            Db::Sqlite(p) => sqlx::query(SQL)
                .bind(subject)
                .bind(&wrapped)
                .execute(p)
                .await
                .map(drop)?,
        }
        // Another writer may have won the race: use whatever is stored.
        match self.fetch(subject).await? {
            Some(Some(stored)) => self.unwrap_key(subject, &stored),
            _ => Err(StoreError::Shredded(subject.to_string())),
        }
    }

    /// Destroys the subject's key. Idempotent; the row stays as a tombstone so the subject
    /// can never be written again under a new key.
    pub async fn shred(&self, subject: &str) -> Result<(), StoreError> {
        const PG: &str = "INSERT INTO subject_keys (subject_id, wrapped, shredded_at) VALUES ($1, NULL, now()) ON CONFLICT (subject_id) DO UPDATE SET wrapped = NULL, shredded_at = coalesce(subject_keys.shredded_at, now())";
        const LITE: &str = "INSERT INTO subject_keys (subject_id, wrapped, shredded_at) VALUES ($1, NULL, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) ON CONFLICT (subject_id) DO UPDATE SET wrapped = NULL, shredded_at = coalesce(subject_keys.shredded_at, excluded.shredded_at)";
        match &self.db {
            Db::Postgres(p) => sqlx::query(PG).bind(subject).execute(p).await.map(drop)?,
            Db::Sqlite(p) => sqlx::query(LITE).bind(subject).execute(p).await.map(drop)?,
        }
        self.cache
            .lock()
            .insert(subject.to_string(), Cached::Shredded);
        Ok(())
    }
}

/// The protected-field declarations of every domain.
#[derive(Debug, Clone, Default)]
pub struct Protection {
    rules: Vec<ProtectedFields>,
}

impl Protection {
    pub fn new(rules: &[ProtectedFields]) -> Self {
        Protection {
            rules: rules.to_vec(),
        }
    }

    /// The subject and field pointers for an event, if it has personal fields.
    pub fn lookup<'a>(
        &'a self,
        aggregate_type: &str,
        aggregate_id: &'a str,
        event_type: &str,
    ) -> Option<(&'a str, &'a [&'a str])> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.aggregate_type == aggregate_type)?;
        let (_, pointers) = rule.fields.iter().find(|(t, _)| *t == event_type)?;
        Some(((rule.subject)(aggregate_id), pointers))
    }
}

/// Applies `f` to every value a pointer (with `*` for array elements) designates.
fn each_at(
    value: &mut Value,
    pointer: &str,
    f: &mut dyn FnMut(&mut Value) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    fn walk(
        v: &mut Value,
        parts: &[&str],
        f: &mut dyn FnMut(&mut Value) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        match parts.split_first() {
            None => f(v),
            Some((&"*", rest)) => match v {
                Value::Array(items) => items.iter_mut().try_for_each(|item| walk(item, rest, f)),
                _ => Ok(()),
            },
            Some((key, rest)) => match v.get_mut(*key) {
                Some(child) => walk(child, rest, f),
                None => Ok(()),
            },
        }
    }
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    walk(value, &parts, f)
}

/// Encrypts the designated fields in place.
pub(crate) fn seal(
    payload: &mut Value,
    pointers: &[&str],
    cipher: &Aes256Gcm,
    subject: &str,
) -> Result<(), StoreError> {
    for pointer in pointers {
        each_at(payload, pointer, &mut |v| {
            if v.is_null() {
                return Ok(());
            }
            let plain = serde_json::to_vec(v)?;
            let sealed = seal_bytes(cipher, &plain, subject.as_bytes())?;
            *v = Value::String(format!(
                "{PREFIX}{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(sealed)
            ));
            Ok(())
        })?;
    }
    Ok(())
}

/// Decrypts the designated fields in place; with no key (shredded) they become `null`.
/// Returns whether anything was shredded.
pub(crate) fn open(
    payload: &mut Value,
    pointers: &[&str],
    cipher: Option<&Aes256Gcm>,
    subject: &str,
) -> Result<bool, StoreError> {
    let mut shredded = false;
    for pointer in pointers {
        each_at(payload, pointer, &mut |v| {
            let Some(text) = v.as_str().and_then(|s| s.strip_prefix(PREFIX)) else {
                return Ok(());
            };
            let Some(cipher) = cipher else {
                shredded = true;
                *v = Value::Null;
                return Ok(());
            };
            let sealed = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(text)
                .map_err(|e| StoreError::Crypto(format!("sealed field is not base64: {e}")))?;
            let plain = open_bytes(cipher, &sealed, subject.as_bytes()).ok_or_else(|| {
                StoreError::Crypto(format!(
                    "a sealed field of {subject} does not decrypt (tampered or wrong key)"
                ))
            })?;
            *v = serde_json::from_slice(&plain)?;
            Ok(())
        })?;
    }
    Ok(shredded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seals_and_opens_designated_fields_only() {
        let cipher = Aes256Gcm::new(&[7u8; 32].into());
        let original = json!({ "VitalsRecorded": { "patient_id": "p1", "readings": [{ "kind": "PAIN", "value": 9.5 }, { "kind": "SPO2", "value": 88.0 }] } });
        let mut payload = original.clone();
        seal(
            &mut payload,
            &["/VitalsRecorded/readings/*/value"],
            &cipher,
            "p1",
        )
        .unwrap();
        // Each value became a sealed string (not a substring check on the whole text: base64
        // ciphertext can contain "88" by chance).
        for reading in payload["VitalsRecorded"]["readings"].as_array().unwrap() {
            let sealed = reading["value"].as_str().unwrap_or_default();
            assert!(sealed.starts_with("enc:v1:"), "{payload}");
        }
        assert_eq!(payload["VitalsRecorded"]["readings"][0]["kind"], "PAIN");
        assert_eq!(payload["VitalsRecorded"]["patient_id"], "p1");
        let mut opened = payload.clone();
        assert!(!open(
            &mut opened,
            &["/VitalsRecorded/readings/*/value"],
            Some(&cipher),
            "p1"
        )
        .unwrap());
        assert_eq!(opened, original);
        // Another subject's AAD does not open it; no key reads as shredded.
        let mut wrong = payload.clone();
        assert!(open(
            &mut wrong,
            &["/VitalsRecorded/readings/*/value"],
            Some(&cipher),
            "p2"
        )
        .is_err());
        let mut gone = payload;
        assert!(open(&mut gone, &["/VitalsRecorded/readings/*/value"], None, "p1").unwrap());
        assert_eq!(gone["VitalsRecorded"]["readings"][0]["value"], Value::Null);
    }

    #[test]
    fn master_key_formats() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(
            MasterKey::parse(&base64::engine::general_purpose::STANDARD.encode([1u8; 32])).is_ok()
        );
        assert!(MasterKey::parse("short").is_err());
    }
}
