//! Damaging files on purpose, to show a check notices.

use std::path::Path;

/// Flips the lowest bit of the byte in the middle of the file at `path`;
/// an empty file (e.g. a topic with no records yet) gets one byte instead,
/// the smallest change it can have.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    if bytes.is_empty() {
        bytes.push(0);
    } else {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
    }
    std::fs::write(path, bytes).unwrap();
}

/// Copies the directory tree `from` to `to` (created).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
