//! Locating the workspace's built binaries from inside a test.

use std::path::PathBuf;

/// The directory holding the workspace's binaries for the test's profile
/// (`target/debug`), found from the test executable's own path.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/debug/deps/<test> -> target/debug
    let mut dir = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn must_exist(path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins --examples` first (scripts/test does)",
        path.display()
    );
    path
}

/// A binary target of the workspace, e.g. `mortar` or `catalog`.
pub fn binary(name: &str) -> PathBuf {
    must_exist(profile_dir().join(name))
}

/// An example target of the workspace, e.g. `minimal`.
pub fn example(name: &str) -> PathBuf {
    must_exist(profile_dir().join("examples").join(name))
}
