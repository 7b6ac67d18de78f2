//! Checking what fixture consumers handled (`FIXTURE_HANDLED_DIR`): every
//! instance appends `<payload> <attempt>` per message it handled, to its
//! own file, before acking it.

use std::collections::BTreeMap;
use std::path::Path;

/// What the consumers of one test handled, read from their record files.
#[derive(Debug, Default)]
pub struct Handled {
    /// How many times each payload was handled.
    pub counts: BTreeMap<String, u32>,
    /// Per payload, `(record file, attempt)` of each handling, for reports.
    pub records: BTreeMap<String, Vec<(String, String)>>,
    /// Handlings of a redelivered message (attempt above 1).
    pub redelivered: u32,
    /// Record files read (one per process that consumed).
    pub files: usize,
}

impl Handled {
    /// Reads every record file in `dir`.
    pub fn read(dir: &Path) -> Handled {
        let mut handled = Handled::default();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            handled.files += 1;
            for line in text.lines() {
                let (payload, attempt) = line.rsplit_once(' ').unwrap();
                handled
                    .records
                    .entry(payload.to_owned())
                    .or_default()
                    .push((file.clone(), attempt.to_owned()));
                *handled.counts.entry(payload.to_owned()).or_default() += 1;
                if attempt != "1" {
                    handled.redelivered += 1;
                }
            }
        }
        handled
    }

    /// Payloads handled more than once, with their counts.
    pub fn duplicates(&self) -> Vec<(&str, u32)> {
        self.counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(p, n)| (p.as_str(), *n))
            .collect()
    }

    /// Of `expected`, the payloads never handled.
    pub fn missing<'a>(&self, expected: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        expected
            .into_iter()
            .filter(|p| !self.counts.contains_key(*p))
            .collect()
    }
}
