//! Choosing the backend from `MORTAR_STORE_URL`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{EventStore, PostgresStore, SqliteStore, StoreError};

/// The environment variable naming a service's store.
pub const STORE_URL_ENV: &str = "MORTAR_STORE_URL";

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:///path/to/file.db`
    Sqlite(PathBuf),
    /// `postgres://user@host:port/db?schema=name` — the connection string
    /// without `schema`, and the schema (default `public`).
    Postgres {
        /// The libpq-style URL, without the `schema` parameter.
        conninfo: String,
        /// The schema holding this store's tables.
        schema: String,
    },
}

impl StoreUrl {
    /// Parses `sqlite://…` or `postgres://…` / `postgresql://…`.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let invalid = |problem: &str| StoreError::InvalidUrl {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(invalid("the URL has no file path"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let mut schema = "public".to_owned();
            let mut rest = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.strip_prefix("schema=") {
                    Some(s) => schema = s.to_owned(),
                    None => rest.push(pair),
                }
            }
            if schema.is_empty()
                || !schema
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(invalid("schema must be lowercase letters, digits and '_'"));
            }
            let conninfo = if rest.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            return Ok(StoreUrl::Postgres { conninfo, schema });
        }
        Err(invalid(
            "expected sqlite:///path/to/file.db or postgres://user@host/db",
        ))
    }
}

/// Opens the event store a URL names, creating its tables when missing.
pub async fn open(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(&path).await?)),
        StoreUrl::Postgres { conninfo, schema } => {
            Ok(Arc::new(PostgresStore::connect(&conninfo, &schema).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends() {
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/x.db").unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            StoreUrl::parse("postgres://postgres@127.0.0.1/test?schema=s1&connect_timeout=3")
                .unwrap(),
            StoreUrl::Postgres {
                conninfo: "postgres://postgres@127.0.0.1/test?connect_timeout=3".into(),
                schema: "s1".into()
            }
        );
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("sqlite://").is_err());
        assert!(StoreUrl::parse("postgres://h/d?schema=Bad;drop").is_err());
    }
}
