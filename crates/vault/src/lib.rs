//! The secrets vault: a master key wraps one data key per tenant; secrets are sealed with
//! XChaCha20-Poly1305 under that data key, bound to tenant and secret name.
//!
//! Plaintext exists only in memory, only while a caller holds a [`SecretValue`], whose
//! `Debug` never prints it. Nothing here logs a value.

mod master;

use berth_audit::NewEntry;
use berth_core::binding::{Destination, permits};
use berth_core::clock::now_ms;
use berth_core::{ResourceName, Role, TenantId, TenantScope};
use berth_store::{AuditStore, SealedSecret, SecretStore, Store, StoreError, WrappedKey};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use zeroize::Zeroizing;

pub use master::{MasterKey, MasterKeyError, create_private as create_private_file};

/// The most a secret value may hold (API.md: 64 KiB).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Authentication of ciphertext failed: wrong master key, or tampered data.
    #[error("a sealed value could not be opened (wrong master key or tampered data)")]
    Unseal,
    #[error("secret value is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
    /// The secret's binding does not name the destination (refusal audited).
    #[error("the secret '{secret}' may not be sent to {destination}: its binding does not name it")]
    NotPermitted { secret: String, destination: String },
}

/// A revealed secret. Its `Debug` and `Display` print `[redacted]`; memory is wiped on drop.
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    /// Wraps a secret that did not come from the vault (a platform key from the
    /// environment), so it is handled, printed and wiped the same way.
    pub fn new(value: String) -> Self {
        SecretValue(Zeroizing::new(value))
    }

    /// The plaintext, for injecting into one outbound request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

type DataKey = Zeroizing<[u8; 32]>;

pub struct Vault {
    master: MasterKey,
    store: Arc<dyn SecretStore>,
    /// Where refused injections are recorded.
    audit: Arc<dyn AuditStore>,
    /// Unwrapped data keys, so a reveal costs one store read, not two.
    data_keys: RwLock<HashMap<TenantId, Arc<DataKey>>>,
}

impl Vault {
    pub fn new(master: MasterKey, store: Arc<dyn Store>) -> Self {
        Vault {
            master,
            audit: store.clone(),
            store,
            data_keys: RwLock::new(HashMap::new()),
        }
    }

    /// Seals and stores `value` under `name` with where it may be injected (`binding`,
    /// checked by [`berth_core::binding::parse_binding`]; `None`: unbound) and the writer's
    /// role, auditing the write (never the value). Writing a value replaces its binding.
    pub async fn put(
        &self,
        scope: &TenantScope,
        name: &ResourceName,
        value: &str,
        binding: Option<&[String]>,
        audit: &NewEntry,
    ) -> Result<(), VaultError> {
        if value.len() > MAX_SECRET_BYTES {
            return Err(VaultError::TooLarge);
        }
        let key = self.data_key(scope).await?;
        let (nonce, ciphertext) = seal(
            &key[..],
            &secret_aad(scope.tenant(), name.as_str()),
            value.as_bytes(),
        )?;
        let now = now_ms();
        let created = self
            .store
            .get_secret(scope, name.as_str())
            .await?
            .map_or(now, |s| s.created_at_ms);
        let sealed = SealedSecret {
            name: name.as_str().to_owned(),
            nonce,
            ciphertext,
            binding: binding.map(|b| serde_json::Value::from(b.to_vec()).to_string()),
            writer_role: Some(scope.principal().role().as_str().to_owned()),
            created_at_ms: created,
            updated_at_ms: now,
        };
        self.store.put_secret(scope, &sealed, audit).await?;
        Ok(())
    }

    /// Opens the secret `name` to inject it into `dest`, or `None` if the tenant has none
    /// by that name. The only way to open a secret: a binding that does not name `dest`
    /// (see [`berth_core::binding`]) refuses it, with a `secret.refused` audit entry naming
    /// the secret and the destination, never the value.
    pub async fn reveal_for(
        &self,
        scope: &TenantScope,
        name: &str,
        dest: &Destination,
    ) -> Result<Option<SecretValue>, VaultError> {
        let Some(sealed) = self.store.get_secret(scope, name).await? else {
            return Ok(None);
        };
        // A value written before writers' roles were kept counts as an admin's (fail
        // closed); a binding that no longer parses names nothing.
        let writer = sealed
            .writer_role
            .as_deref()
            .and_then(|r| r.parse::<Role>().ok())
            .unwrap_or(Role::Admin);
        let binding: Option<Vec<String>> = sealed
            .binding
            .as_ref()
            .map(|json| serde_json::from_str(json).unwrap_or_default());
        if !permits(binding.as_deref(), writer, dest) {
            let entry = NewEntry::new(
                scope.actor(),
                "secret.refused",
                name,
                serde_json::json!({"destination": dest.label(), "kind": dest.kind.as_str(),
                                   "name": dest.name, "host": dest.host,
                                   "destination_written_by": dest.written_by.as_str(),
                                   "secret_written_by": writer.as_str()}),
            );
            if let Err(e) = self.audit.append_audit(scope, &entry).await {
                tracing::error!(error = %e, secret = name, "a refused secret injection was not audited");
            }
            return Err(VaultError::NotPermitted {
                secret: name.to_owned(),
                destination: dest.label(),
            });
        }
        let key = self.data_key(scope).await?;
        let plain = open(
            &key[..],
            &secret_aad(scope.tenant(), name),
            &sealed.nonce,
            &sealed.ciphertext,
        )?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| VaultError::Unseal)?;
        Ok(Some(SecretValue(Zeroizing::new(text))))
    }

    /// Drops the cached data key of a tenant (after the tenant is deleted).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        if let Ok(mut keys) = self.data_keys.write() {
            keys.remove(tenant);
        }
    }

    /// The tenant's data key: from cache, else unwrapped from the store, else created.
    async fn data_key(&self, scope: &TenantScope) -> Result<Arc<DataKey>, VaultError> {
        if let Some(k) = self
            .data_keys
            .read()
            .ok()
            .and_then(|m| m.get(scope.tenant()).cloned())
        {
            return Ok(k);
        }
        let aad = dek_aad(scope.tenant());
        let wrapped = match self.store.data_key(scope).await? {
            Some(w) => w,
            None => {
                let mut fresh: DataKey = Zeroizing::new([0u8; 32]);
                rand::thread_rng().fill_bytes(&mut fresh[..]);
                let (nonce, wrapped) = seal(self.master.bytes(), &aad, &fresh[..])?;
                // Another request may have created one first; the store keeps the first.
                self.store
                    .insert_data_key(scope, &WrappedKey { nonce, wrapped })
                    .await?
            }
        };
        let plain = open(self.master.bytes(), &aad, &wrapped.nonce, &wrapped.wrapped)?;
        let mut key: DataKey = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(VaultError::Unseal);
        }
        key.copy_from_slice(&plain);
        let key = Arc::new(key);
        if let Ok(mut keys) = self.data_keys.write() {
            keys.insert(scope.tenant().clone(), key.clone());
        }
        Ok(key)
    }
}

fn dek_aad(tenant: &TenantId) -> Vec<u8> {
    format!("berth/v1/data-key/{tenant}").into_bytes()
}

fn secret_aad(tenant: &TenantId, name: &str) -> Vec<u8> {
    format!("berth/v1/secret/{tenant}/{name}").into_bytes()
}

fn seal(key: &[u8], aad: &[u8], plain: &[u8]) -> Result<(Vec<u8>, Vec<u8>), VaultError> {
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| VaultError::Unseal)?;
    let mut nonce = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| VaultError::Unseal)?;
    Ok((nonce.to_vec(), ct))
}

fn open(key: &[u8], aad: &[u8], nonce: &[u8], ct: &[u8]) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    if nonce.len() != 24 {
        return Err(VaultError::Unseal);
    }
    let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| VaultError::Unseal)?;
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map(Zeroizing::new)
        .map_err(|_| VaultError::Unseal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_value_is_bound_to_its_context() {
        let key = [7u8; 32];
        let (nonce, ct) = seal(&key, b"ctx-a", b"hunter2").unwrap();
        assert_eq!(&open(&key, b"ctx-a", &nonce, &ct).unwrap()[..], b"hunter2");
        assert!(open(&key, b"ctx-b", &nonce, &ct).is_err());
        assert!(open(&[8u8; 32], b"ctx-a", &nonce, &ct).is_err());
        let mut tampered = ct.clone();
        tampered[0] ^= 1;
        assert!(open(&key, b"ctx-a", &nonce, &tampered).is_err());
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn secret_value_never_formats_its_plaintext() {
        let v = SecretValue(Zeroizing::new("sk-live-123".to_owned()));
        assert_eq!(format!("{v:?} {v}"), "[redacted] [redacted]");
        assert_eq!(v.expose(), "sk-live-123");
    }
}
