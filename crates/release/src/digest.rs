//! SHA-256 of files and bytes, as lower-case hex.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::ReleaseError;

/// The SHA-256 of `bytes`.
pub(crate) fn of_bytes(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The SHA-256 and size of the file at `path`, read in chunks.
pub(crate) fn of_file(path: &Path) -> Result<(String, u64), ReleaseError> {
    let mut file = std::fs::File::open(path).map_err(|e| ReleaseError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| ReleaseError::io(path, e))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((format!("{:x}", hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_standard_sha256() {
        assert_eq!(
            of_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(of_file(&file).unwrap(), (of_bytes(b"abc"), 3));
    }
}
