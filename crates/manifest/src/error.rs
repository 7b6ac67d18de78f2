//! What goes wrong when loading a manifest, shaped for people fixing it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One problem in a manifest, located precisely enough to jump to it.
///
/// Displayed as `{path}:{line}:{column}: {field}: {message}`, the format
/// editors and terminals recognise as a clickable location. Syntax errors
/// have no field and display as `{path}:{line}:{column}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The manifest file the error is in.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// Dotted path of the offending field, such as
    /// `services.catalog.depends_on[1]`; empty for a TOML syntax error.
    pub field: String,
    /// What is wrong and what is expected instead.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one manifest, so a user fixes them in one pass
/// instead of one per run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestErrors {
    /// The manifest file the errors are in.
    pub path: PathBuf,
    /// The problems, in source order; never empty.
    pub errors: Vec<ManifestError>,
}

impl fmt::Display for ManifestErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Why [`Manifest::load`](crate::Manifest::load) failed: the file could not
/// be read, or it was read and is invalid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (most often: it does not exist here).
    #[error("{}", io_message(path, source))]
    Io {
        /// The manifest path that was tried.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// The file was read but is not a valid manifest.
    #[error(transparent)]
    Invalid(#[from] ManifestErrors),
}

/// The message for an unreadable manifest; a missing one gets a hint, since
/// running from the wrong directory is the usual cause.
fn io_message(path: &std::path::Path, source: &io::Error) -> String {
    if source.kind() == io::ErrorKind::NotFound {
        format!(
            "manifest {} not found; run mortar in the directory that holds it, or pass -f <path>",
            path.display()
        )
    } else {
        format!("cannot read the manifest {}: {source}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: usize, field: &str, message: &str) -> ManifestError {
        ManifestError {
            path: PathBuf::from("shop/mortar.toml"),
            line,
            column: 13,
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn one_error_displays_as_path_line_column_field_message() {
        let e = error(
            7,
            "services.catalog.instances",
            "expected an integer from 1 to 64, found 0",
        );
        assert_eq!(
            e.to_string(),
            "shop/mortar.toml:7:13: services.catalog.instances: expected an integer from 1 to 64, found 0"
        );
        let syntax = error(2, "", "invalid string");
        assert_eq!(syntax.to_string(), "shop/mortar.toml:2:13: invalid string");
    }

    #[test]
    fn errors_display_one_per_line() {
        let all = ManifestErrors {
            path: PathBuf::from("shop/mortar.toml"),
            errors: vec![error(1, "a", "x"), error(2, "b", "y")],
        };
        assert_eq!(
            all.to_string(),
            "shop/mortar.toml:1:13: a: x\nshop/mortar.toml:2:13: b: y"
        );
    }

    #[test]
    fn not_found_names_the_path_and_suggests_f() {
        let e = LoadError::Io {
            path: PathBuf::from("nowhere/mortar.toml"),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let text = e.to_string();
        assert!(text.contains("nowhere/mortar.toml"), "{text}");
        assert!(text.contains("-f <path>"), "{text}");
    }
}
