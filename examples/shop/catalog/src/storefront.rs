//! The storefront: one plain HTML page with its script (no build step),
//! served at `/shop` and reached through the gateway, so every call it makes
//! (`/v1/products`, `/v1/identity/…`, `/v1/orders`, `/v1/order-history`,
//! `/v1/notifications`) goes to the same origin and the gateway's routes.

use axum::http::header;
use axum::response::IntoResponse;

/// The page, compiled in so the catalog binary is all it takes to serve it.
const PAGE: &str = include_str!("storefront.html");

/// `GET /shop`: the page, cacheable for a short while like the product
/// pages (the gateway may answer from its cache while the catalog is down).
pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CACHE_CONTROL,
                "public, max-age=5, stale-if-error=600",
            ),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    #[tokio::test]
    async fn the_page_is_html_that_calls_the_shops_apis_through_the_same_origin() {
        let resp = page().await.into_response();
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        let html = String::from_utf8(body.to_vec()).unwrap();
        for path in [
            "/v1/products",
            "/v1/identity/signup",
            "/v1/identity/login",
            "/v1/orders",
            "/v1/order-history",
            "/v1/notifications",
        ] {
            assert!(html.contains(&format!("\"{path}")), "calls {path}");
        }
        assert!(
            !html.contains("http://"),
            "no absolute URLs: same origin only"
        );
    }
}
