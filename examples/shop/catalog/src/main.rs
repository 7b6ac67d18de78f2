//! The shop's catalog service: public product data over HTTP, from SQLite
//! or PostgreSQL (`MORTAR_STORE_URL`).
//!
//! Everything twelve-factor (config, logs, port, health, draining) comes from
//! the SDK; this crate is only the catalog.

mod api;
mod config;
mod store;
mod storefront;

use std::process::ExitCode;

fn main() -> ExitCode {
    mortar_sdk::run("catalog", |ctx| async move {
        let config: config::CatalogConfig = ctx.config()?;
        let store = store::Store::open(&config.store).await?;
        if config.seed {
            let added = store.seed().await?;
            if added > 0 {
                tracing::info!(added, "seeded the catalog with sample products");
            }
        }
        let probe = store.clone();
        ctx.readiness().add_check("store", move || {
            let store = probe.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        });
        Ok(api::routes(store, config.page_size))
    })
}
