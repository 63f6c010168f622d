//! The master key: 32 bytes from `BERTH_MASTER_KEY` or a file, generated (mode 0600) if missing.

use rand::RngCore;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key must be 32 bytes as 64 hex characters or base64; got {0} characters")]
    Malformed(usize),
    #[error("cannot read or create master key file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// Parses a key given as 64 hex characters or standard base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, MasterKeyError> {
        use base64::Engine;
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .map(Zeroizing::new)
            .ok_or(MasterKeyError::Malformed(text.len()))?;
        let mut key = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(MasterKeyError::Malformed(text.len()));
        }
        key.copy_from_slice(&bytes);
        Ok(MasterKey(key))
    }

    /// Reads the key file, or creates it with a fresh random key readable only by its owner.
    pub fn load_or_create(path: &Path) -> Result<Self, MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                rand::thread_rng().fill_bytes(&mut key[..]);
                let encoded = Zeroizing::new(hex::encode(&key[..]));
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let mut file = create_private(path).map_err(io)?;
                file.write_all(encoded.as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok(MasterKey(key))
            }
            Err(e) => Err(io(e)),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0[..]
    }
}

/// Creates a new file with mode 0600 (never replacing an existing one).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_and_base64_and_refuses_others() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").is_ok());
        assert!(MasterKey::parse("short").is_err());
        assert!(MasterKey::parse(&"ab".repeat(31)).is_err());
    }

    #[test]
    fn generated_file_is_private_and_stable() {
        let dir = std::env::temp_dir().join(format!("berth-mk-{}", std::process::id()));
        let path = dir.join("master.key");
        let _ = std::fs::remove_file(&path);
        let a = MasterKey::load_or_create(&path).unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
