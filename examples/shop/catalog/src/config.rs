//! The catalog's settings, from the environment.

use mortar_eventstore::StoreUrl;
use mortar_sdk::{ConfigError, Env, FromEnv};

/// The largest page a client may ask for.
pub(crate) const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone)]
pub(crate) struct CatalogConfig {
    /// The store, from `MORTAR_STORE_URL`: `sqlite:///path/to/file.db`, or
    /// `postgres://user@host/db?schema=catalog` (the catalog's own schema).
    pub(crate) store: StoreUrl,
    /// `CATALOG_SEED`: add sample products to an empty catalog.
    pub(crate) seed: bool,
    /// `CATALOG_PAGE_SIZE`: the default page size of product lists.
    pub(crate) page_size: u32,
}

impl FromEnv for CatalogConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const STORE: &str = "a SQLite or PostgreSQL URL such as sqlite:///var/lib/shop/catalog.db or postgres://user@host/shop?schema=catalog";
        let store = env
            .parse_with("MORTAR_STORE_URL", STORE, |s| {
                StoreUrl::parse(s).map_err(|e| e.to_string())
            })?
            .ok_or_else(|| ConfigError::Missing {
                name: "MORTAR_STORE_URL".into(),
                expected: STORE.into(),
            })?;
        let seed = env.or_default("CATALOG_SEED", "true or false", true)?;
        let page_size = env
            .parse_with(
                "CATALOG_PAGE_SIZE",
                "a page size from 1 to 500",
                |s| match s.parse::<u32>() {
                    Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
                    Ok(n) => Err(format!("{n} is out of range")),
                    Err(e) => Err(e.to_string()),
                },
            )?
            .unwrap_or(50);
        Ok(CatalogConfig {
            store,
            seed,
            page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_is_required_and_may_be_sqlite_or_postgres() {
        let err = CatalogConfig::from_env(&Env::default()).unwrap_err();
        assert_eq!(err.variable(), "MORTAR_STORE_URL");
        let err = CatalogConfig::from_env(&Env::from_pairs([("MORTAR_STORE_URL", "mysql://x/y")]))
            .unwrap_err();
        assert_eq!(err.variable(), "MORTAR_STORE_URL");
        assert!(err.to_string().contains("postgres://"), "{err}");
        let ok = CatalogConfig::from_env(&Env::from_pairs([(
            "MORTAR_STORE_URL",
            "sqlite:///tmp/c.db",
        )]))
        .unwrap();
        assert_eq!(ok.store, StoreUrl::Sqlite("/tmp/c.db".into()));
        assert!(ok.seed);
        assert_eq!(ok.page_size, 50);
        let ok = CatalogConfig::from_env(&Env::from_pairs([(
            "MORTAR_STORE_URL",
            "postgres://shop@db/shop?schema=catalog",
        )]))
        .unwrap();
        assert_eq!(
            ok.store,
            StoreUrl::Postgres {
                conninfo: "postgres://shop@db/shop".into(),
                schema: "catalog".into()
            }
        );
    }

    #[test]
    fn page_size_is_bounded() {
        let env = Env::from_pairs([
            ("MORTAR_STORE_URL", "sqlite:///tmp/c.db"),
            ("CATALOG_PAGE_SIZE", "0"),
        ]);
        assert_eq!(
            CatalogConfig::from_env(&env).unwrap_err().variable(),
            "CATALOG_PAGE_SIZE"
        );
    }
}
