//! `berth validate [DIR]`: checks an agent directory offline: its `agent.toml`, and that
//! every file the manifest names exists inside the directory (not through a symlink out).

use berth_core::Manifest;
use std::path::Path;

/// The manifest of `dir`, or a message naming the file, line and field at fault.
pub fn validate_dir(dir: &Path) -> Result<Manifest, String> {
    let path = dir.join("agent.toml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let manifest =
        Manifest::parse(&path.display().to_string(), &text).map_err(|e| e.to_string())?;
    let root = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    for file in manifest.referenced_files() {
        let full = dir.join(file);
        let real = full
            .canonicalize()
            .map_err(|_| format!("{}: component.path: {file} does not exist", path.display()))?;
        if !real.starts_with(&root) {
            return Err(format!(
                "{}: component.path: {file} points outside the agent directory",
                path.display()
            ));
        }
        if !real.is_file() {
            return Err(format!(
                "{}: component.path: {file} is not a file",
                path.display()
            ));
        }
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_named_by_the_manifest_must_be_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        std::fs::create_dir(&agent).unwrap();
        let manifest =
            "name = \"bot\"\n[model]\nname = \"mock/echo\"\n[component]\npath = \"agent.wasm\"\n";
        std::fs::write(agent.join("agent.toml"), manifest).unwrap();
        let err = validate_dir(&agent).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::write(dir.path().join("outside.wasm"), b"\0asm").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.wasm"), agent.join("agent.wasm"))
            .unwrap();
        let err = validate_dir(&agent).unwrap_err();
        assert!(err.contains("outside"), "{err}");
        std::fs::remove_file(agent.join("agent.wasm")).unwrap();
        std::fs::write(agent.join("agent.wasm"), b"\0asm").unwrap();
        assert_eq!(validate_dir(&agent).unwrap().name, "bot");
        assert!(
            validate_dir(dir.path())
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
