//! Agent bundles: a tar.gz holding `agent.toml` and the files it names, unpacked in memory
//! with every hostile shape refused (path traversal, links, devices, decompression bombs),
//! and a content digest that depends on the files only, not on tar metadata.

use crate::error::Error;
use berth_core::Manifest;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// Largest compressed bundle (API.md: 50 MiB).
pub const MAX_BUNDLE_BYTES: usize = 50 * 1024 * 1024;
/// Largest total unpacked size: a small bundle may not expand into gigabytes.
const MAX_UNPACKED_BYTES: u64 = 200 * 1024 * 1024;
const MAX_FILES: usize = 10_000;

pub struct Bundle {
    pub manifest: Manifest,
    pub files: BTreeMap<String, Vec<u8>>,
    pub digest: String,
}

fn bad(message: impl Into<String>) -> Error {
    Error::invalid("invalid_bundle", "bundle", message)
}

/// A normalised relative path, or why it is refused.
fn clean_path(raw: &str) -> Result<Option<String>, Error> {
    let mut parts = Vec::new();
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(bad(format!("entry {raw:?} climbs out of the bundle"))),
            s => parts.push(s),
        }
    }
    if raw.starts_with('/') {
        return Err(bad(format!("entry {raw:?} is an absolute path")));
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// [`unpack`] on the blocking pool: decompressing up to 200 MiB takes long enough to hold
/// up every other request served by the same async worker.
pub async fn unpack_off_the_workers(name: &str, gz: bytes::Bytes) -> Result<Bundle, Error> {
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || unpack(&name, &gz))
        .await
        .map_err(|e| Error::internal(&e))?
}

/// Unpacks and checks a bundle for the agent `name`.
pub fn unpack(name: &str, gz: &[u8]) -> Result<Bundle, Error> {
    if gz.len() > MAX_BUNDLE_BYTES {
        return Err(Error::too_large("an agent bundle may be at most 50 MiB"));
    }
    if !gz.starts_with(&[0x1f, 0x8b]) {
        return Err(bad(
            "the bundle is not gzip data (send a tar.gz, or JSON with Content-Type: application/json)",
        ));
    }
    let decoder = flate2::read::GzDecoder::new(gz).take(MAX_UNPACKED_BYTES + 1);
    let mut archive = tar::Archive::new(decoder);
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("the archive is damaged: {e}")))?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            clean_path(&raw)?;
            continue;
        }
        if !kind.is_file() {
            return Err(bad(format!(
                "entry {raw:?} is a link or special file; bundles hold regular files only"
            )));
        }
        let Some(path) = clean_path(&raw)? else {
            continue;
        };
        total += entry.header().size().unwrap_or(0);
        if total > MAX_UNPACKED_BYTES {
            return Err(Error::too_large("the bundle unpacks to more than 200 MiB"));
        }
        if files.len() >= MAX_FILES {
            return Err(bad(format!("more than {MAX_FILES} files")));
        }
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| bad(format!("entry {raw:?} cannot be read: {e}")))?;
        if files.insert(path.clone(), data).is_some() {
            return Err(bad(format!("entry {path:?} appears twice")));
        }
    }
    let text = files
        .get("agent.toml")
        .ok_or_else(|| bad("the bundle has no agent.toml at its root"))?;
    let text = std::str::from_utf8(text).map_err(|_| bad("agent.toml is not UTF-8"))?;
    let manifest = Manifest::parse("agent.toml", text)
        .map_err(|e| Error::invalid("invalid_manifest", &e.field, e.to_string()))?;
    check_name(name, &manifest)?;
    for f in manifest.referenced_files() {
        if !files.contains_key(f) {
            return Err(Error::invalid(
                "invalid_manifest",
                "component.path",
                format!("agent.toml names {f}, which the bundle does not contain"),
            ));
        }
    }
    let digest = digest_files(&files);
    Ok(Bundle {
        manifest,
        files,
        digest,
    })
}

/// The manifest's `name` must be the agent deployed to.
pub fn check_name(name: &str, manifest: &Manifest) -> Result<(), Error> {
    if manifest.name != name {
        return Err(Error::invalid(
            "invalid_manifest",
            "name",
            format!(
                "the manifest is for agent '{}', not '{name}'",
                manifest.name
            ),
        ));
    }
    Ok(())
}

/// sha256 over every file's path, length and content, in path order.
pub fn digest_files(files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (path, data) in files {
        h.update((path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update((data.len() as u64).to_be_bytes());
        h.update(data);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(12345);
            // Written raw, so that hostile names reach the parser unchanged.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    const TOML: &[u8] = b"name = \"bot\"\n[model]\nname = \"mock/echo\"\n";

    #[test]
    fn a_good_bundle_and_its_stable_digest() {
        let a = unpack(
            "bot",
            &tar_gz(&[("agent.toml", TOML), ("./notes.md", b"hi")]),
        )
        .unwrap();
        let b = unpack(
            "bot",
            &tar_gz(&[("./notes.md", b"hi"), ("agent.toml", TOML)]),
        )
        .unwrap();
        assert_eq!(
            a.digest, b.digest,
            "order and tar metadata do not change the digest"
        );
        assert!(a.files.contains_key("notes.md"));
        let c = unpack("bot", &tar_gz(&[("agent.toml", TOML), ("notes.md", b"ho")])).unwrap();
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn hostile_bundles_are_refused() {
        let code = |r: Result<Bundle, Error>| r.err().map(|e| e.code).unwrap_or("accepted");
        assert_eq!(code(unpack("bot", b"not gzip at all")), "invalid_bundle");
        assert_eq!(
            code(unpack(
                "bot",
                &tar_gz(&[("../evil", b"x"), ("agent.toml", TOML)])
            )),
            "invalid_bundle"
        );
        assert_eq!(
            code(unpack(
                "bot",
                &tar_gz(&[("/etc/evil", b"x"), ("agent.toml", TOML)])
            )),
            "invalid_bundle"
        );
        assert_eq!(
            code(unpack("bot", &tar_gz(&[("notes.md", b"x")]))),
            "invalid_bundle"
        );
        assert_eq!(
            code(unpack("other", &tar_gz(&[("agent.toml", TOML)]))),
            "invalid_manifest"
        );
        let with_component =
            b"name = \"bot\"\n[model]\nname = \"mock/echo\"\n[component]\npath = \"agent.wasm\"\n";
        assert_eq!(
            code(unpack("bot", &tar_gz(&[("agent.toml", with_component)]))),
            "invalid_manifest"
        );
        // A symlink entry, even one pointing inside, is refused.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "agent.wasm", "/etc/passwd").unwrap();
        let mut h2 = tar::Header::new_gnu();
        h2.set_size(TOML.len() as u64);
        b.append_data(&mut h2, "agent.toml", TOML).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
        assert_eq!(code(unpack("bot", &gz.finish().unwrap())), "invalid_bundle");
        // A decompression bomb: 300 MiB of zeros compresses to a few hundred KiB.
        let zeros = vec![0u8; 300 * 1024 * 1024];
        assert_eq!(
            code(unpack(
                "bot",
                &tar_gz(&[("agent.toml", TOML), ("big", &zeros)])
            )),
            "payload_too_large"
        );
    }
}
