//! The repository's key files (FORMAT.md, "Keys"): each wraps the same master keys under
//! one password, so passwords are added, changed and removed without touching any data.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::crypto::KeyFile;
use crate::format::id::Id;
use crate::repo::Repository;
use crate::runtime;

/// One `keys/` object.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// Its name under `keys/`.
    pub id: String,
    /// When and where it was made; none for an object that is not a key file.
    pub created: Option<DateTime<Utc>>,
    pub host: Option<String>,
    /// The key file that opened the repository in this run.
    pub current: bool,
    /// Why it is not a key file (damage, a stray file), when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damaged: Option<String>,
}

impl Repository {
    /// Every `keys/` object, by name.
    pub async fn key_list(&self) -> Result<Vec<KeyInfo>> {
        let mut listed = Vec::new();
        for meta in self.store.list("keys/").await? {
            let id = meta
                .key
                .strip_prefix("keys/")
                .unwrap_or(&meta.key)
                .to_string();
            let bytes = self.store.get(&meta.key).await?;
            let current = id == self.key_name;
            listed.push(match serde_json::from_slice::<KeyFile>(&bytes) {
                Ok(file) => KeyInfo {
                    id,
                    created: Some(file.created),
                    host: Some(file.host),
                    current,
                    damaged: None,
                },
                Err(e) => KeyInfo {
                    id,
                    created: None,
                    host: None,
                    current,
                    damaged: Some(format!("not a key file: {e}")),
                },
            });
        }
        listed.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(listed)
    }

    /// Adds a key file opening the repository with `password`; returns its name.
    pub async fn add_key(&self, password: &[u8], host: &str) -> Result<String> {
        let (raw, hash, password, host) = (
            self.keys.raw(),
            self.config_hash,
            password.to_vec(),
            host.to_string(),
        );
        let file = runtime::blocking("key derivation", move || {
            KeyFile::wrap(&raw, hash, &password, &host)
        })
        .await??;
        let name = Id::random().to_hex();
        self.store
            .put(&format!("keys/{name}"), file.to_json().into())
            .await?;
        Ok(name)
    }

    /// Removes the key file `spec` names (its name or a unique prefix of it). Refuses the
    /// key that opened the repository (use another password, or `change_password`) and
    /// the last key file that is one.
    pub async fn remove_key(&self, spec: &str) -> Result<String> {
        let listed = self.key_list().await?;
        let named: Vec<&KeyInfo> = listed
            .iter()
            .filter(|k| !spec.is_empty() && k.id.starts_with(spec))
            .collect();
        let key = match named.as_slice() {
            [one] => *one,
            [] => return Err(Error::usage(format!("no key file {spec}"))),
            _ => return Err(Error::usage(format!("{spec} names several key files"))),
        };
        if key.current {
            return Err(Error::usage(format!(
                "key {} opened the repository in this run: open it with another password to \
                 remove it, or change this one with `stowage key passwd`",
                short(&key.id)
            )));
        }
        let usable = listed.iter().filter(|k| k.damaged.is_none()).count();
        if key.damaged.is_none() && usable <= 1 {
            return Err(Error::usage(format!(
                "key {} is the last one: without it nothing in the repository can be read",
                short(&key.id)
            )));
        }
        self.store.delete(&format!("keys/{}", key.id)).await?;
        Ok(key.id.clone())
    }

    /// Replaces the key file that opened the repository by one for `password`: the new one
    /// is stored first. Returns the new key file's name.
    pub async fn change_password(&self, password: &[u8], host: &str) -> Result<String> {
        let name = self.add_key(password, host).await?;
        self.store
            .delete(&format!("keys/{}", self.key_name))
            .await?;
        Ok(name)
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}
