//! The shop's identity service: who the shop's users are.
//!
//! Users sign up and log in with a username and password (stored as
//! argon2id hashes in SQLite, or PostgreSQL for scale-out: `MORTAR_STORE_URL`)
//! and get a short-lived access token (an EdDSA JWT, see `mortar-auth`)
//! with a refresh token to get the next one. Every
//! other part of the shop checks those tokens on its own, against the keys
//! this service publishes at `/.well-known/jwks.json` and that verifiers
//! cache, so users who are signed in keep working while identity is down;
//! only new log-ins wait for it.
//!
//! The signing key rotates (every `IDENTITY_KEY_ROTATION`, or on
//! `POST /v1/keys/rotate`): the new key signs from then on, the old one
//! stays published until the last token it signed has expired.

mod api;
mod config;
mod password;
mod store;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mortar_auth::{TokenIssuer, Verifier, VerifierConfig, now_secs};
use mortar_sdk::auth::Auth;

fn main() -> ExitCode {
    mortar_sdk::run("identity", |ctx| async move {
        let config = Arc::new(ctx.config::<config::IdentityConfig>()?);
        let store = store::Store::open(&config.store).await?;
        let key = store.current_key(now_secs()).await?;
        tracing::info!(kid = key.kid(), issuer = %config.issuer, audience = %config.audience, "signing key ready");
        let probe = store.clone();
        ctx.readiness().add_check("store", move || {
            let store = probe.clone();
            async move { store.ping().await.map_err(|e| e.to_string()) }
        });

        // Its own tokens (for /me and the key endpoints) are checked
        // against the store directly; a short gap, since a fetch is a
        // local query.
        let mut own = VerifierConfig::new(&config.issuer, &config.audience);
        own.min_refresh_gap = Duration::from_millis(200);
        own.refresh_interval = Duration::from_secs(30);
        let verifier = Verifier::new(
            own,
            Arc::new(api::LocalKeys {
                store: store.clone(),
                config: config.clone(),
            }),
        );
        verifier.spawn_refresh();

        if let Some(max_age) = config.key_rotation {
            tokio::spawn(rotate_keys(
                store.clone(),
                config.clone(),
                verifier.clone(),
                max_age,
                ctx.shutdown_token(),
            ));
        }
        let tokens = TokenIssuer::new(&config.issuer, &config.audience, config.access_ttl);
        let auth = Auth::new(verifier.clone());
        Ok(api::routes(
            api::Api {
                store,
                config,
                tokens,
                verifier,
            },
            &auth,
        ))
    })
}

/// Rotates the signing key once it is `max_age` old. Every instance runs
/// this; the store's transaction makes sure only one of them rotates.
async fn rotate_keys(
    store: store::Store,
    config: Arc<config::IdentityConfig>,
    verifier: Verifier,
    max_age: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let every = (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        match store
            .rotate(Some(max_age), config.key_retention(), now_secs())
            .await
        {
            Ok(Some(key)) => {
                tracing::info!(kid = key.kid(), "signing key rotated (scheduled)");
                verifier.reload().await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "scheduled key rotation failed; retrying later"),
        }
    }
}
