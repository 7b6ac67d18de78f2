//! The catalog's HTTP API under `/v1/products`.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::MAX_PAGE_SIZE;
use crate::store::{NewProduct, Product, Store, StoreError};

#[derive(Clone)]
struct Api {
    store: Store,
    page_size: u32,
}

pub(crate) fn routes(store: Store, page_size: u32) -> Router {
    Router::new()
        .route("/v1/products", get(list).post(create))
        .route("/v1/products/{id}", get(fetch))
        .route("/shop", get(crate::storefront::page))
        .with_state(Api { store, page_size })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Return products after this id (the `next` of the previous page).
    after: Option<i64>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct Page {
    items: Vec<Product>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<i64>,
}

fn store_problem(error: StoreError) -> Problem {
    match error {
        StoreError::DuplicateSku(sku) => Problem::new(
            StatusCode::CONFLICT,
            format!("a product with SKU {sku:?} already exists; choose another SKU"),
        )
        .with_type("urn:mortar:shop:duplicate-sku")
        .with_title("Duplicate SKU"),
        other => {
            tracing::error!(error = %other, "catalog store failed");
            Problem::unavailable("the catalog store is not available; try again shortly")
        }
    }
}

/// How long clients and the gateway may reuse a product page, and how long a
/// cached copy may stand in while the catalog is down: product data changes
/// rarely, and a slightly old page beats an error page.
const CACHE_CONTROL: &str = "public, max-age=5, stale-if-error=600";

/// Answers a public read: JSON with `Cache-Control` and a content-derived
/// `ETag` (the same on every instance), or 304 when the client has it.
fn cacheable<T: Serialize>(headers: &HeaderMap, value: &T) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(body) => body,
        Err(e) => {
            return Problem::internal(format!("cannot encode the response: {e}")).into_response();
        }
    };
    let etag = format!("\"{:08x}-{:x}\"", crc32c::crc32c(&body), body.len());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let common = [
        (header::CACHE_CONTROL, CACHE_CONTROL.to_owned()),
        (header::ETAG, etag),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(header::CONTENT_TYPE, "application/json".to_owned())],
        body,
    )
        .into_response()
}

async fn list(
    State(api): State<Api>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Response, Problem> {
    let limit = q.limit.unwrap_or(api.page_size);
    if !(1..=MAX_PAGE_SIZE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {MAX_PAGE_SIZE}, got {limit}"
        ))
        .with("field", "limit"));
    }
    let items = api
        .store
        .list(q.after.unwrap_or(0), limit)
        .await
        .map_err(store_problem)?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|p| p.id))
        .flatten();
    Ok(cacheable(&headers, &Page { items, next }))
}

async fn fetch(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Result<Response, Problem> {
    let product = api
        .store
        .get(id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found(format!("no product with id {id}")))?;
    Ok(cacheable(&headers, &product))
}

/// Checks a new product; returns every invalid field, not just the first.
fn validate(new: &NewProduct) -> Vec<(&'static str, String)> {
    let mut errors = Vec::new();
    let sku_ok = !new.sku.is_empty()
        && new.sku.len() <= 32
        && new
            .sku
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
    if !sku_ok {
        errors.push(("sku", "use 1-32 characters of A-Z, 0-9 and '-'".to_owned()));
    }
    if new.name.trim().is_empty() || new.name.len() > 200 {
        errors.push(("name", "must be 1-200 characters".to_owned()));
    }
    if new.description.len() > 2000 {
        errors.push(("description", "must be at most 2000 characters".to_owned()));
    }
    if new.price_cents <= 0 {
        errors.push((
            "price_cents",
            format!(
                "must be a positive amount in cents, got {}",
                new.price_cents
            ),
        ));
    }
    if new.currency.len() != 3 || !new.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.push((
            "currency",
            "must be an ISO 4217 code such as EUR".to_owned(),
        ));
    }
    errors
}

async fn create(State(api): State<Api>, Json(new): Json<NewProduct>) -> Result<Response, Problem> {
    let errors = validate(&new);
    if !errors.is_empty() {
        let detail = errors
            .iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect::<Vec<_>>()
            .join("; ");
        let list: Vec<_> = errors
            .iter()
            .map(|(field, message)| json!({ "field": field, "message": message }))
            .collect();
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
            .with_type("urn:mortar:shop:invalid-product")
            .with_title("Invalid product")
            .with("errors", list));
    }
    let product = api.store.insert(new).await.map_err(store_problem)?;
    let location = format!("/v1/products/{}", product.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(product),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&mortar_eventstore::StoreUrl::Sqlite(
            dir.path().join("c.db"),
        ))
        .await
        .unwrap();
        store.seed().await.unwrap();
        (routes(store, 4), dir)
    }

    async fn call(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or_default(),
            ctype,
        )
    }

    #[tokio::test]
    async fn pages_follow_next_until_the_end() {
        let (app, _dir) = app().await;
        let (status, page, _) = call(
            &app,
            Request::get("/v1/products").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["items"].as_array().unwrap().len(), 4);
        let next = page["next"].as_i64().unwrap();
        let uri = format!("/v1/products?after={next}");
        let (_, page, _) = call(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(page["items"].as_array().unwrap().len(), 2);
        assert!(page.get("next").is_none());
    }

    #[tokio::test]
    async fn reads_are_cacheable_with_a_stable_etag_and_304() {
        let (app, _dir) = app().await;
        let resp = app
            .clone()
            .oneshot(Request::get("/v1/products/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.headers()[header::CACHE_CONTROL], CACHE_CONTROL);
        let etag = resp.headers()[header::ETAG].clone();
        let again = app
            .clone()
            .oneshot(Request::get("/v1/products/1").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            again.headers()[header::ETAG],
            etag,
            "same content, same ETag"
        );
        let cond = Request::get("/v1/products/1")
            .header(header::IF_NONE_MATCH, etag)
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(cond).await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
        let other = app
            .oneshot(Request::get("/v1/products/2").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_ne!(other.headers()[header::ETAG], resp.headers()[header::ETAG]);
    }

    #[tokio::test]
    async fn bad_input_gets_problem_json_naming_the_fields() {
        let (app, _dir) = app().await;
        let req = Request::post("/v1/products")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"sku":"bad sku","name":"","price_cents":-5}"#,
            ))
            .unwrap();
        let (status, body, ctype) = call(&app, req).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(ctype, "application/problem+json");
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["sku", "name", "price_cents"]);

        let req = Request::post("/v1/products")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{not json"))
            .unwrap();
        let (status, _, ctype) = call(&app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(ctype, "application/problem+json");

        let (status, body, _) = call(
            &app,
            Request::get("/v1/products/999")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["detail"], "no product with id 999");

        let (status, _, _) = call(
            &app,
            Request::get("/v1/products?limit=0")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // Nothing was added by the bad requests.
        let (_, page, _) = call(
            &app,
            Request::get("/v1/products?limit=100")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 6);
    }

    #[tokio::test]
    async fn create_returns_201_with_location_and_refuses_duplicates() {
        let (app, _dir) = app().await;
        let make = || {
            Request::post("/v1/products")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    r#"{"sku":"NEW-1","name":"New","price_cents":100}"#,
                ))
                .unwrap()
        };
        let (status, body, _) = call(&app, make()).await;
        assert_eq!(status, StatusCode::CREATED);
        let id = body["id"].as_i64().unwrap();
        let (status, fetched, _) = call(
            &app,
            Request::get(format!("/v1/products/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched["sku"], "NEW-1");
        let (status, _, _) = call(&app, make()).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
}
