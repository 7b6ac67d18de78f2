//! The HTTP API: "my orders" (`GET /v1/order-history?customer=`), and the
//! projection's status and rebuild (`/v1/projections`), which
//! `mortar projections` calls.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use mortar_sdk::Problem;
use mortar_sdk::http::{Json, Path, Query};
use serde_json::json;

use crate::history::{History, HistoryError};
use crate::projection::NAME;

/// Orders per page unless `limit` says otherwise.
const DEFAULT_LIMIT: i64 = 20;
/// The most orders one page may ask for.
const MAX_LIMIT: i64 = 100;
/// The longest customer id accepted.
const MAX_CUSTOMER: usize = 200;

pub(crate) fn routes(history: Arc<History>) -> Router {
    Router::new()
        .route("/v1/order-history", get(orders))
        .route("/v1/projections", get(projections))
        .route("/v1/projections/{name}/rebuild", post(rebuild))
        .with_state(history)
}

/// A valid "my orders" query.
#[derive(Debug, PartialEq, Eq)]
struct OrdersQuery {
    customer: String,
    limit: i64,
}

/// Checks the query; returns every invalid field, not just the first.
fn parse_query(q: &HashMap<String, String>) -> Result<OrdersQuery, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let customer = q.get("customer").map(|c| c.trim()).unwrap_or_default();
    if customer.is_empty() {
        errors.push((
            "customer".to_owned(),
            "is required: the id of the customer whose orders to list".to_owned(),
        ));
    } else if customer.len() > MAX_CUSTOMER {
        errors.push((
            "customer".to_owned(),
            format!("must be at most {MAX_CUSTOMER} characters"),
        ));
    }
    let limit = match q.get("limit") {
        None => Some(DEFAULT_LIMIT),
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Some(n),
            _ => {
                errors.push((
                    "limit".to_owned(),
                    format!("must be a whole number from 1 to {MAX_LIMIT}, got {raw:?}"),
                ));
                None
            }
        },
    };
    let mut unknown: Vec<&String> = q
        .keys()
        .filter(|k| !matches!(k.as_str(), "customer" | "limit"))
        .collect();
    unknown.sort();
    for key in unknown {
        errors.push((
            key.clone(),
            "is not a known parameter (customer, limit)".to_owned(),
        ));
    }
    match limit {
        Some(limit) if errors.is_empty() => Ok(OrdersQuery {
            customer: customer.to_owned(),
            limit,
        }),
        _ => Err(errors),
    }
}

fn invalid_query(errors: &[(String, String)]) -> Problem {
    let detail = errors
        .iter()
        .map(|(field, message)| format!("{field}: {message}"))
        .collect::<Vec<_>>()
        .join("; ");
    let list: Vec<_> = errors
        .iter()
        .map(|(field, message)| json!({ "field": field, "message": message }))
        .collect();
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, detail)
        .with_type("urn:mortar:shop:invalid-query")
        .with_title("Invalid query")
        .with("errors", list)
}

fn unavailable(error: &HistoryError) -> Problem {
    tracing::error!(error = %error, "order history failed");
    Problem::unavailable(format!("the order history is not available: {error}"))
}

async fn orders(
    State(history): State<Arc<History>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let q = parse_query(&q).map_err(|errors| invalid_query(&errors))?;
    let orders = history
        .orders(&q.customer, q.limit)
        .await
        .map_err(|e| unavailable(&e.into()))?;
    Ok(Json(json!({ "customer": q.customer, "orders": orders })).into_response())
}

async fn projections(State(history): State<Arc<History>>) -> Result<Response, Problem> {
    let status = history.status().await.map_err(|e| unavailable(&e))?;
    Ok(Json(json!({ "projections": [status] })).into_response())
}

async fn rebuild(
    State(history): State<Arc<History>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    if name != NAME {
        return Err(Problem::not_found(format!(
            "no projection {name:?} here; this service has: {NAME}"
        ))
        .with_type("urn:mortar:problem:unknown-projection")
        .with("known", json!([NAME])));
    }
    match history.rebuild().await {
        Ok(done) => Ok(Json(done).into_response()),
        Err(e @ HistoryError::Busy) => Err(Problem::new(StatusCode::CONFLICT, e.to_string())
            .with_type("urn:mortar:problem:rebuild-running")),
        Err(e) => Err(unavailable(&e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Result<OrdersQuery, Vec<String>> {
        let q = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        parse_query(&q).map_err(|e| e.into_iter().map(|(f, _)| f).collect())
    }

    #[test]
    fn a_customer_is_required_and_limit_is_bounded() {
        assert_eq!(
            query(&[("customer", "ann")]).unwrap(),
            OrdersQuery {
                customer: "ann".into(),
                limit: DEFAULT_LIMIT
            }
        );
        assert_eq!(
            query(&[("customer", "ann"), ("limit", "100")])
                .unwrap()
                .limit,
            100
        );
        assert_eq!(query(&[]).unwrap_err(), ["customer"]);
        assert_eq!(query(&[("customer", "  ")]).unwrap_err(), ["customer"]);
        assert_eq!(
            query(&[("customer", "ann"), ("limit", "101")]).unwrap_err(),
            ["limit"]
        );
        assert_eq!(
            query(&[("limit", "x"), ("sort", "asc")]).unwrap_err(),
            ["customer", "limit", "sort"]
        );
    }
}
