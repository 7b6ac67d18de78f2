//! [`Secrets`]: the plaintext inside the CMS envelope, a flat TOML table of
//! `NAME = "value"` lines.
//!
//! TOML because people edit it (`mortar secrets edit`) and it reads the same
//! after `openssl cms -decrypt`. Every message about it names keys, lines and
//! columns but never quotes the text: the text is secret.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use mortar_manifest::{RESERVED_ENV_KEYS, RESERVED_ENV_PREFIX};
use toml::de::{DeTable, DeValue};
use zeroize::Zeroizing;

use crate::error::SecretsError;
use crate::value::SecretValue;

/// The largest secret value accepted, in bytes. Each secret becomes one
/// environment variable, and Linux refuses to start a process with a single
/// variable over 128 KiB; half of that leaves room and is far more than a
/// key or password needs.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// The comment written at the top of the plaintext, so whoever decrypts the
/// file (`mortar secrets edit`, `openssl cms -decrypt`) knows its form.
const HEADER: &str = "\
# mortar secrets: one NAME = \"value\" per line (TOML basic or literal strings).
# NAME is the environment variable a service gets (^[A-Z_][A-Z0-9_]*$, not MORTAR_* or PORT);
# a service gets only the secrets its manifest entry lists under `secrets`.
# Comments and order are not kept: the file is rewritten sorted by name.
";

/// An application's secrets: name → value, sorted by name.
///
/// `Debug` shows the names and [`crate::REDACTED`] for every value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, SecretValue>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.values.iter()).finish()
    }
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Self {
        Secrets::default()
    }

    /// Parses the plaintext form; `origin` says where it came from in
    /// errors ("stdin", "the decrypted content of secrets.cms").
    ///
    /// Every name and value is checked, so what comes out can be handed to
    /// a process environment as it is.
    pub fn parse(text: &[u8], origin: &str) -> Result<Secrets, SecretsError> {
        let content = |location: Option<(usize, usize)>, message: String| SecretsError::Content {
            origin: origin.to_owned(),
            location,
            message,
        };
        let text = std::str::from_utf8(text).map_err(|e| {
            content(
                None,
                format!(
                    "not UTF-8 text (invalid byte at offset {}); expected a TOML table of NAME = \"value\" lines",
                    e.valid_up_to()
                ),
            )
        })?;
        let locate = |span: Range<usize>| Some(line_column(text, span.start));
        let root = DeTable::parse(text).map_err(|e| {
            // The message only: toml's Display quotes the offending line.
            let message = format!("not valid TOML: {}", e.message());
            content(e.span().and_then(locate), message)
        })?;
        let mut values = BTreeMap::new();
        // In source order, so the first problem reported is the first one.
        let mut entries: Vec<_> = root.get_ref().iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        for (key, value) in entries {
            let name = key.get_ref().as_ref();
            let at = locate(key.span());
            if let Some(problem) = name_problem(name) {
                return Err(content(at, problem));
            }
            let text = match value.get_ref() {
                DeValue::String(text) => text,
                DeValue::Table(_) => {
                    return Err(content(
                        at,
                        format!(
                            "{name} is a table; secrets are top-level NAME = \"value\" lines, without [tables] or dotted keys"
                        ),
                    ));
                }
                other => {
                    return Err(content(
                        locate(value.span()),
                        format!(
                            "{name}: expected a string, found {}; quote the value",
                            with_article(other.type_str())
                        ),
                    ));
                }
            };
            if let Some(problem) = value_problem(name, text) {
                return Err(content(locate(value.span()), problem));
            }
            values.insert(name.to_owned(), SecretValue::new(text.as_ref()));
        }
        Ok(Secrets { values })
    }

    /// The plaintext form: a header comment, then `NAME = "value"` lines
    /// sorted by name. Parsing it gives back the same secrets.
    pub fn to_toml(&self) -> Zeroizing<String> {
        let size: usize = self.values.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
        let mut out = Zeroizing::new(String::with_capacity(HEADER.len() + size));
        out.push_str(HEADER);
        for (name, value) in &self.values {
            out.push_str(name);
            out.push_str(" = ");
            push_basic_string(&mut out, value.expose());
            out.push('\n');
        }
        out
    }

    /// The secret called `name`.
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.values.get(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// Name and value of every secret, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How many secrets there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sets `name` to `value` after checking both; returns the old value.
    pub fn insert(
        &mut self,
        name: &str,
        value: SecretValue,
    ) -> Result<Option<SecretValue>, SecretsError> {
        let problem = name_problem(name).or_else(|| value_problem(name, value.expose()));
        if let Some(problem) = problem {
            return Err(SecretsError::Name {
                name: name.to_owned(),
                problem,
            });
        }
        Ok(self.values.insert(name.to_owned(), value))
    }

    /// Removes `name`; returns its value if it was there.
    pub fn remove(&mut self, name: &str) -> Option<SecretValue> {
        self.values.remove(name)
    }

    /// The secrets called `names`, for a service that asked for exactly
    /// those; `Err` lists the names that are not here.
    pub fn select<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Secrets, Vec<String>> {
        let mut picked = BTreeMap::new();
        let mut missing = Vec::new();
        for name in names {
            match self.values.get(name) {
                Some(value) => {
                    picked.insert(name.to_owned(), value.clone());
                }
                None => missing.push(name.to_owned()),
            }
        }
        if missing.is_empty() {
            Ok(Secrets { values: picked })
        } else {
            Err(missing)
        }
    }
}

/// Why `name` cannot name a secret, if it cannot. A secret is handed to a
/// service as the environment variable of the same name, so the rules are
/// those of the manifest's `env` keys.
pub fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        Some(format!(
            "invalid secret name {name:?}; a secret is passed as the environment variable of that name: upper-case letters, digits and '_', not starting with a digit (^[A-Z_][A-Z0-9_]*$)"
        ))
    } else if name.starts_with(RESERVED_ENV_PREFIX) || RESERVED_ENV_KEYS.contains(&name) {
        Some(format!(
            "secret name {name:?} is reserved: mortar sets {RESERVED_ENV_PREFIX}* and {} itself",
            RESERVED_ENV_KEYS.join(", ")
        ))
    } else {
        None
    }
}

/// Why `value` cannot be the value of secret `name`, if it cannot. Never
/// quotes the value.
fn value_problem(name: &str, value: &str) -> Option<String> {
    if value.contains('\0') {
        Some(format!(
            "{name}: the value contains a NUL character, which an environment variable cannot hold"
        ))
    } else if value.len() > MAX_VALUE_BYTES {
        Some(format!(
            "{name}: the value is {} bytes; at most {MAX_VALUE_BYTES} fit in an environment variable",
            value.len()
        ))
    } else {
        None
    }
}

/// Appends `value` as a TOML basic string: `"`, `\` and control characters
/// escaped, everything else as it is.
fn push_basic_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04X}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// "a string", "an integer": the type name with its article.
fn with_article(type_name: &str) -> String {
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
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Secrets, SecretsError> {
        Secrets::parse(text.as_bytes(), "test")
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(s) => panic!("{text:?} parsed: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_flat_table_of_strings() {
        let s = parse("# c\nDB_PASSWORD = \"hunter2\"\nAPI_KEY = 'x\\y'\n_T = \"\"\"a\nb\"\"\"\n")
            .unwrap();
        assert_eq!(
            s.names().collect::<Vec<_>>(),
            ["API_KEY", "DB_PASSWORD", "_T"]
        );
        assert_eq!(s.get("DB_PASSWORD").unwrap().expose(), "hunter2");
        assert_eq!(s.get("API_KEY").unwrap().expose(), "x\\y");
        assert_eq!(s.get("_T").unwrap().expose(), "a\nb");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn debug_shows_names_but_not_values() {
        let s = parse("DB_PASSWORD = \"hunter2\"").unwrap();
        let shown = format!("{s:?}");
        assert!(
            shown.contains("DB_PASSWORD") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn errors_locate_the_problem_without_quoting_values() {
        for (text, wants) in [
            ("A = hunter2", "line 1, column 5: not valid TOML"),
            ("A = \"hunter2", "not valid TOML"),
            (
                "A = \"x\"\nA = \"hunter2\"",
                "line 2, column 1: not valid TOML: duplicate key",
            ),
            ("A = 1234567", "A: expected a string, found an integer"),
            ("A = [\"hunter2\"]", "A: expected a string, found an array"),
            ("A.B = \"hunter2\"", "A is a table"),
            ("[A]\nB = \"hunter2\"", "A is a table"),
            ("db = \"hunter2\"", "invalid secret name \"db\""),
            ("MORTAR_X = \"hunter2\"", "reserved"),
            ("PORT = \"hunter2\"", "reserved"),
            ("A = \"hun\\u0000ter2\"", "NUL character"),
        ] {
            let message = error(text);
            assert!(message.contains(wants), "{text:?}: {message}");
            assert!(message.starts_with("test: "), "{message}");
            for secret in ["hunter2", "1234567"] {
                assert!(!message.contains(secret), "{text:?} leaks: {message}");
            }
        }
        let big = format!("A = \"{}\"", "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(error(&big).contains("at most 65536"));
        let not_utf8 = Secrets::parse(b"A = \"\xff\"", "test").unwrap_err();
        assert!(not_utf8.to_string().contains("not UTF-8"), "{not_utf8}");
    }

    #[test]
    fn insert_checks_name_and_value_and_select_reports_missing_names() {
        let mut s = Secrets::new();
        assert!(s.insert("A", SecretValue::new("1")).unwrap().is_none());
        assert_eq!(
            s.insert("A", SecretValue::new("2"))
                .unwrap()
                .unwrap()
                .expose(),
            "1"
        );
        s.insert("B", SecretValue::new("3")).unwrap();
        let e = s.insert("bad-name", SecretValue::new("v")).unwrap_err();
        assert!(e.to_string().contains("bad-name"), "{e}");
        assert!(s.insert("C", SecretValue::new("a\0b")).is_err());

        let picked = s.select(["B"]).unwrap();
        assert_eq!(picked.names().collect::<Vec<_>>(), ["B"]);
        assert_eq!(s.select(["A", "X", "Y"]).unwrap_err(), ["X", "Y"]);
        assert_eq!(s.remove("A").unwrap().expose(), "2");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn rendering_sorts_names_and_escapes_values() {
        let mut s = Secrets::new();
        s.insert("Z", SecretValue::new("q\"uo\\te\n\ttab\r\u{7f}\u{1}é"))
            .unwrap();
        s.insert("A", SecretValue::new("plain")).unwrap();
        let text = s.to_toml();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            body,
            [
                "A = \"plain\"",
                "Z = \"q\\\"uo\\\\te\\n\\ttab\\r\\u007F\\u0001é\""
            ]
        );
        assert_eq!(parse(&text).unwrap(), s);
    }

    proptest! {
        #[test]
        fn any_value_survives_a_round_trip(value in "[^\u{0}]{0,64}", name in "[A-Z_][A-Z0-9_]{0,12}") {
            prop_assume!(name_problem(&name).is_none());
            let mut s = Secrets::new();
            s.insert(&name, SecretValue::new(value.clone())).unwrap();
            let back = parse(&s.to_toml()).unwrap();
            prop_assert_eq!(back.get(&name).unwrap().expose(), value.as_str());
        }
    }
}
