//! Files that hold secrets (signing keys, passwords) are refused at start when any user may read
//! them. Group read stays allowed: Kubernetes mounts Secrets `0440` with the pod's `fsGroup`.

use std::path::{Path, PathBuf};

/// A secret file any user of the machine can read or change.
#[derive(Debug, thiserror::Error)]
#[error("{path} is open to every user (mode {mode:o}); make it 0600, 0400 or 0440")]
pub struct ExposedSecret {
    pub path: PathBuf,
    pub mode: u32,
}

/// Checks that others have no access to `path` (a missing file is left to the caller's read).
///
/// # Errors
/// [`ExposedSecret`] when the file grants anything to others.
pub fn check(path: &Path) -> Result<(), ExposedSecret> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o007 != 0 => Err(ExposedSecret {
            path: path.to_owned(),
            mode: meta.permissions().mode() & 0o777,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn only_files_others_can_reach_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "x").unwrap();
        for (mode, refused) in [
            (0o600, false),
            (0o400, false),
            (0o440, false),
            (0o640, false),
            (0o644, true),
            (0o602, true),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check(&path).is_err(), refused, "mode {mode:o}");
        }
        assert!(check(&dir.path().join("missing")).is_ok());
    }
}
