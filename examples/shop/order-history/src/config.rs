//! Where the read store is.

use mortar_cqrs::eventstore::{STORE_URL_ENV, StoreUrl};
use mortar_sdk::{ConfigError, Env};

/// The environment variable naming the read store.
pub(crate) const READ_STORE_URL_ENV: &str = "MORTAR_READ_STORE_URL";

const EXPECTED: &str = "sqlite:///path/read.db or postgres://user@host/db?schema=name";

/// `MORTAR_READ_STORE_URL`, or — like every service's own store — a file in
/// the service's data directory: `read.db` beside the `MORTAR_STORE_URL`
/// file the supervisor sets (on PostgreSQL, that URL's schema).
pub(crate) fn read_store_url(env: &Env) -> Result<String, ConfigError> {
    let check = |name: &str, url: &str| {
        StoreUrl::parse(url).map_err(|e| ConfigError::Invalid {
            name: name.into(),
            value: url.into(),
            expected: EXPECTED.into(),
            problem: e.to_string(),
        })
    };
    if let Some(url) = env.raw(READ_STORE_URL_ENV) {
        check(READ_STORE_URL_ENV, url)?;
        return Ok(url.to_owned());
    }
    let Some(store) = env.raw(STORE_URL_ENV) else {
        return Err(ConfigError::Missing {
            name: READ_STORE_URL_ENV.into(),
            expected: format!(
                "{EXPECTED}, or {STORE_URL_ENV} to put read.db beside it (mortar up sets it)"
            ),
        });
    };
    match check(STORE_URL_ENV, store)? {
        StoreUrl::Sqlite(path) => Ok(format!(
            "sqlite://{}",
            path.with_file_name("read.db").display()
        )),
        StoreUrl::Postgres { .. } => Ok(store.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn explicit_url_wins_else_read_db_beside_the_store() {
        let env = Env::from_pairs([
            (READ_STORE_URL_ENV, "sqlite:///r/x.db"),
            (STORE_URL_ENV, "sqlite:///d/store.db"),
        ]);
        assert_eq!(read_store_url(&env).unwrap(), "sqlite:///r/x.db");
        let env = Env::from_pairs([(STORE_URL_ENV, "sqlite:///d/services/oh/store.db")]);
        assert_eq!(
            read_store_url(&env).unwrap(),
            "sqlite:///d/services/oh/read.db"
        );
        let pg = "postgres://postgres@127.0.0.1/shop?schema=order_history";
        let env = Env::from_pairs([(STORE_URL_ENV, pg)]);
        assert_eq!(read_store_url(&env).unwrap(), pg);
    }

    #[test]
    fn missing_or_bad_urls_name_the_variable() {
        let err = read_store_url(&Env::default()).unwrap_err();
        assert_eq!(err.variable(), READ_STORE_URL_ENV);
        let env = Env::from_pairs([(READ_STORE_URL_ENV, "mysql://x/y")]);
        assert_eq!(
            read_store_url(&env).unwrap_err().variable(),
            READ_STORE_URL_ENV
        );
    }
}
