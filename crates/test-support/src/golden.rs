//! Golden files: compare generated text with a checked-in expectation, and
//! regenerate it with `UPDATE_GOLDEN=1` after an intended change.

use std::path::Path;

/// Asserts that `actual` equals the contents of `path`; with
/// `UPDATE_GOLDEN=1` writes `actual` there instead (review the diff).
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden file {}: {e}; create it with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let line = expected
        .lines()
        .zip(actual.lines())
        .position(|(e, a)| e != a)
        .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
    panic!(
        "{} differs from the output at line {}:\n  expected: {:?}\n  actual:   {:?}\nif the change is intended, regenerate with UPDATE_GOLDEN=1 and review the diff",
        path.display(),
        line + 1,
        expected.lines().nth(line).unwrap_or("<end of file>"),
        actual.lines().nth(line).unwrap_or("<end of output>"),
    );
}
