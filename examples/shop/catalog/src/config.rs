//! The catalog's settings, from the environment.

use std::path::PathBuf;

use mortar_sdk::{ConfigError, Env, FromEnv};

/// The largest page a client may ask for.
pub(crate) const MAX_PAGE_SIZE: u32 = 500;

#[derive(Debug, Clone)]
pub(crate) struct CatalogConfig {
    /// The SQLite file, from `MORTAR_STORE_URL` (`sqlite:///path/to/file.db`).
    pub(crate) db_path: PathBuf,
    /// `CATALOG_SEED`: add sample products to an empty catalog.
    pub(crate) seed: bool,
    /// `CATALOG_PAGE_SIZE`: the default page size of product lists.
    pub(crate) page_size: u32,
}

impl FromEnv for CatalogConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let db_path = env
            .parse_with(
                "MORTAR_STORE_URL",
                "a SQLite URL such as sqlite:///var/lib/shop/catalog.db",
                |s| match s.strip_prefix("sqlite://") {
                    Some(path) if !path.is_empty() => Ok(PathBuf::from(path)),
                    Some(_) => Err("the URL has no file path".to_owned()),
                    None => Err(
                        "the catalog stores its data in SQLite; the URL must start with sqlite://"
                            .to_owned(),
                    ),
                },
            )?
            .ok_or_else(|| ConfigError::Missing {
                name: "MORTAR_STORE_URL".into(),
                expected: "a SQLite URL such as sqlite:///var/lib/shop/catalog.db".into(),
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
            db_path,
            seed,
            page_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_is_required_and_must_be_sqlite() {
        let err = CatalogConfig::from_env(&Env::default()).unwrap_err();
        assert_eq!(err.variable(), "MORTAR_STORE_URL");
        let err =
            CatalogConfig::from_env(&Env::from_pairs([("MORTAR_STORE_URL", "postgres://x/y")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("must start with sqlite://"),
            "{err}"
        );
        let ok = CatalogConfig::from_env(&Env::from_pairs([(
            "MORTAR_STORE_URL",
            "sqlite:///tmp/c.db",
        )]))
        .unwrap();
        assert_eq!(ok.db_path, PathBuf::from("/tmp/c.db"));
        assert!(ok.seed);
        assert_eq!(ok.page_size, 50);
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
