//! Typed reads of spanned TOML values that record an error instead of
//! stopping, so the walk in `parse` can go on and find every problem.
//!
//! Each read returns `None` when the value is unusable; the error, with its
//! location and field path, is already recorded by then.

use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use crate::error::ManifestError;
use crate::location::LineIndex;

/// A TOML value with the byte range it came from.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;

/// A TOML key with the byte range it came from.
pub(crate) type Key<'i> = Spanned<DeString<'i>>;

/// What the example in messages about durations looks like.
const DURATION_EXAMPLE: &str = r#"a duration such as "10s" or "500ms""#;

/// Collects errors while values of one manifest are read.
pub(crate) struct Reader<'s> {
    source: &'s str,
    path: &'s Path,
    lines: LineIndex<'s>,
    /// Errors with the byte offset they were found at, for sorting.
    errors: Vec<(usize, ManifestError)>,
}

impl<'s> Reader<'s> {
    /// A reader for the manifest `source` read from `path`.
    pub(crate) fn new(source: &'s str, path: &'s Path) -> Self {
        Self {
            source,
            path,
            lines: LineIndex::new(source),
            errors: Vec::new(),
        }
    }

    /// Records that `field`, found at `span`, is wrong.
    pub(crate) fn error(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.lines.locate(span.start);
        let error = ManifestError {
            path: self.path.to_path_buf(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        };
        self.errors.push((span.start, error));
    }

    /// The source text at `span`, to quote what the user wrote.
    pub(crate) fn text(&self, span: Range<usize>) -> &'s str {
        self.source.get(span).unwrap_or_default()
    }

    /// The errors so far, in source order (stable for errors at one spot).
    pub(crate) fn finish(self) -> Vec<ManifestError> {
        let mut errors = self.errors;
        errors.sort_by_key(|(offset, _)| *offset);
        errors.into_iter().map(|(_, error)| error).collect()
    }

    /// Records "expected {expected}, found {a <type>}".
    pub(crate) fn wrong_type(&mut self, value: &Value<'_>, field: &str, expected: &str) {
        let found = with_article(value.get_ref().type_str());
        self.error(
            value.span(),
            field,
            format!("expected {expected}, found {found}"),
        );
    }

    /// Records an error for every key of `table` not in `allowed`, listing
    /// the allowed ones so a typo is obvious.
    pub(crate) fn unknown_keys(&mut self, table: &DeTable<'_>, field: &str, allowed: &[&str]) {
        for (key, _) in entries(table) {
            if !allowed.contains(&key.get_ref().as_ref()) {
                self.error(
                    key.span(),
                    &child(field, key.get_ref()),
                    format!(
                        "unknown key {:?}; expected one of: {}",
                        key.get_ref().as_ref(),
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// The table in `value`, or an error.
    pub(crate) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        field: &str,
    ) -> Option<&'v DeTable<'i>> {
        let table = value.get_ref().as_table();
        if table.is_none() {
            self.wrong_type(value, field, "a table");
        }
        table
    }

    /// The string in `value`, or an error saying `expected` (such as
    /// "a string") was wanted.
    pub(crate) fn string<'v>(
        &mut self,
        value: &'v Value<'_>,
        field: &str,
        expected: &str,
    ) -> Option<&'v str> {
        let text = value.get_ref().as_str();
        if text.is_none() {
            self.wrong_type(value, field, expected);
        }
        text
    }

    /// The integer in `value` if it lies in `range`, or an error.
    pub(crate) fn integer(
        &mut self,
        value: &Value<'_>,
        field: &str,
        range: RangeInclusive<u32>,
    ) -> Option<u32> {
        let expected = format!("an integer from {} to {}", range.start(), range.end());
        let Some(integer) = value.get_ref().as_integer() else {
            self.wrong_type(value, field, &expected);
            return None;
        };
        let parsed = i128::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| range.contains(n));
        if parsed.is_none() {
            self.error(
                value.span(),
                field,
                format!("expected {expected}, found {integer}"),
            );
        }
        parsed
    }

    /// The duration in `value` (humantime syntax, like `"10s"`), or an error.
    /// With `limit`, the duration must also be greater than zero and at most
    /// `limit`.
    pub(crate) fn duration(
        &mut self,
        value: &Value<'_>,
        field: &str,
        limit: Option<Duration>,
    ) -> Option<Duration> {
        let text = self.string(value, field, DURATION_EXAMPLE)?;
        let duration = match humantime::parse_duration(text) {
            Ok(duration) => duration,
            Err(why) => {
                self.error(
                    value.span(),
                    field,
                    format!("invalid duration {text:?} ({why}); expected {DURATION_EXAMPLE}"),
                );
                return None;
            }
        };
        if let Some(limit) = limit
            && (duration.is_zero() || duration > limit)
        {
            self.error(
                value.span(),
                field,
                format!(
                    "expected a duration greater than 0 and at most {}, found {text:?}",
                    humantime::format_duration(limit)
                ),
            );
            return None;
        }
        Some(duration)
    }

    /// The strings in `value`, which must be a non-empty array of strings;
    /// with `non_empty_items`, each string must be non-empty too. Elements
    /// are checked one by one, so every bad element gets its own error.
    pub(crate) fn string_array(
        &mut self,
        value: &Value<'_>,
        field: &str,
        non_empty_items: bool,
    ) -> Option<Vec<Spanned<String>>> {
        const EXPECTED: &str = "a non-empty array of strings";
        let Some(array) = value.get_ref().as_array() else {
            self.wrong_type(value, field, EXPECTED);
            return None;
        };
        if array.is_empty() {
            self.error(
                value.span(),
                field,
                format!("expected {EXPECTED}, found an empty array"),
            );
            return None;
        }
        let mut items = Vec::with_capacity(array.len());
        let mut ok = true;
        for (i, item) in array.iter().enumerate() {
            let item_field = format!("{field}[{i}]");
            match self.string(item, &item_field, "a string") {
                Some("") if non_empty_items => {
                    self.error(item.span(), &item_field, "expected a non-empty string");
                    ok = false;
                }
                Some(text) => items.push(Spanned::new(item.span(), text.to_owned())),
                None => ok = false,
            }
        }
        ok.then_some(items)
    }
}

/// The entries of `table` in source order, whatever order the map keeps.
pub(crate) fn entries<'t, 'i>(table: &'t DeTable<'i>) -> Vec<(&'t Key<'i>, &'t Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// The dotted path of `key` inside `parent`; keys that are not bare TOML
/// keys are quoted, so the path stays unambiguous.
pub(crate) fn child(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

/// Whether `typed` is probably a misspelling of `meant`: at most two
/// single-character edits (insert, delete, substitute, swap neighbours)
/// apart, and fewer edits than half of `meant`'s length.
pub(crate) fn is_probable_typo(typed: &str, meant: &str) -> bool {
    let distance = edit_distance(typed, meant);
    distance <= 2 && distance * 2 < meant.chars().count()
}

/// Optimal-string-alignment distance between `a` and `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // rows[i][j]: distance between a[..i] and b[..j].
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// "an integer", "a string": a TOML type name as it reads in a sentence.
pub(crate) fn with_article(type_name: &str) -> String {
    let article = if type_name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {type_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_paths_quote_keys_that_are_not_bare() {
        assert_eq!(child("", "app"), "app");
        assert_eq!(child("services", "catalog"), "services.catalog");
        assert_eq!(child("services", "my svc"), r#"services."my svc""#);
        assert_eq!(child("services", "a.b"), r#"services."a.b""#);
    }

    #[test]
    fn typos_are_recognised_and_different_words_are_not() {
        assert!(is_probable_typo("comand", "command"));
        assert!(is_probable_typo("instnaces", "instances"));
        assert!(is_probable_typo("nmae", "name"));
        assert!(is_probable_typo("apps", "app"));
        assert!(!is_probable_typo("build", "command"));
        assert!(!is_probable_typo("x", "app"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn type_names_get_the_right_article() {
        assert_eq!(with_article("integer"), "an integer");
        assert_eq!(with_article("array"), "an array");
        assert_eq!(with_article("string"), "a string");
        assert_eq!(with_article("boolean"), "a boolean");
    }
}
