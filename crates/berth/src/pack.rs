//! `berth deploy` packing: the agent directory as a tar.gz, minus what `.berthignore`
//! excludes, refusing symlinks (the server would refuse them too) and reporting progress.

use berth_core::pattern::glob_match;
use std::path::Path;

/// Always left out: version control and build output.
const ALWAYS_IGNORED: &[&str] = &[".git", ".git/*", "target", "target/*", ".berthignore"];

fn ignored(rel: &str, patterns: &[String]) -> bool {
    ALWAYS_IGNORED.iter().any(|p| glob_match(p, rel))
        || patterns.iter().any(|p| {
            let p = p.trim_end_matches('/');
            glob_match(p, rel)
                || glob_match(&format!("{p}/*"), rel)
                || rel
                    .rsplit('/')
                    .next()
                    .is_some_and(|base| glob_match(p, base))
        })
}

#[derive(Debug)]
pub struct Packed {
    pub bytes: Vec<u8>,
    pub files: usize,
    pub raw_bytes: u64,
}

/// Packs `dir` into a tar.gz.
pub fn pack(dir: &Path) -> Result<Packed, String> {
    let patterns: Vec<String> = std::fs::read_to_string(dir.join(".berthignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let mut files = Vec::new();
    walk(dir, dir, &patterns, &mut files)?;
    files.sort();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut raw_bytes = 0;
    for rel in &files {
        let path = dir.join(rel);
        let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        raw_bytes += data.len() as u64;
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        tar.append_data(&mut h, rel, data.as_slice())
            .map_err(|e| format!("{rel}: {e}"))?;
    }
    let gz = tar.into_inner().map_err(|e| e.to_string())?;
    let bytes = gz.finish().map_err(|e| e.to_string())?;
    Ok(Packed {
        bytes,
        files: files.len(),
        raw_bytes,
    })
}

fn walk(root: &Path, dir: &Path, patterns: &[String], out: &mut Vec<String>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .replace('\\', "/");
        if ignored(&rel, patterns) {
            continue;
        }
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_symlink() {
            return Err(format!(
                "{rel} is a symlink; bundles hold regular files only (list it in .berthignore to leave it out)"
            ));
        } else if kind.is_dir() {
            walk(root, &path, patterns, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn packs_files_respecting_berthignore_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("agent.toml"), "name = \"a\"\n").unwrap();
        std::fs::create_dir_all(d.join("docs")).unwrap();
        std::fs::write(d.join("docs/readme.md"), "hi").unwrap();
        std::fs::create_dir_all(d.join("node_modules/x")).unwrap();
        std::fs::write(d.join("node_modules/x/big.js"), "x").unwrap();
        std::fs::write(d.join("secret.env"), "KEY=1").unwrap();
        std::fs::write(d.join(".berthignore"), "# comments\nnode_modules/\n*.env\n").unwrap();
        let p = pack(d).unwrap();
        assert_eq!(p.files, 2);
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(p.bytes.as_slice()));
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            names.push(e.path().unwrap().display().to_string());
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
        }
        assert_eq!(names, vec!["agent.toml", "docs/readme.md"]);
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        assert!(pack(d).unwrap_err().contains("symlink"));
    }
}
