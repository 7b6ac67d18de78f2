//! The shop as its users reach it: through the gateway, one request at a
//! time, never retried — every answer that is not 2xx counts as a failure.

use std::time::Duration;

use serde_json::{Value, json};

/// One user of the shop.
pub(crate) struct Customer {
    http: reqwest::Client,
    gateway: String,
    pub(crate) name: String,
    token: Option<String>,
}

/// The answer to one request: its status (0 for no answer) and body.
pub(crate) type Answer = (u16, Value);

impl Customer {
    pub(crate) fn new(gateway: &str, name: String) -> Customer {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Customer {
            http,
            gateway: gateway.trim_end_matches('/').to_owned(),
            name,
            token: None,
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.gateway));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    /// Signs up; 201 when new.
    pub(crate) async fn sign_up(&self) -> Answer {
        self.send(
            reqwest::Method::POST,
            "/v1/identity/signup",
            Some(self.credentials()),
        )
        .await
    }

    /// Logs in and keeps the access token.
    pub(crate) async fn log_in(&mut self) -> Answer {
        let answer = self
            .send(
                reqwest::Method::POST,
                "/v1/identity/login",
                Some(self.credentials()),
            )
            .await;
        if let Some(token) = answer.1["access_token"].as_str() {
            self.token = Some(token.to_owned());
        }
        answer
    }

    fn credentials(&self) -> Value {
        json!({"username": self.name, "password": "chaos monkey business"})
    }

    /// A page of products (public; the gateway may answer from its cache).
    pub(crate) async fn browse(&self) -> Answer {
        self.send(reqwest::Method::GET, "/v1/products?limit=5", None)
            .await
    }

    /// Places an order; its id when acknowledged (201).
    pub(crate) async fn order(&self) -> Answer {
        let body = json!({"customer": self.name, "lines": [
            {"sku": "MUG-001", "quantity": 1, "unit_price_cents": 1290}]});
        self.send(reqwest::Method::POST, "/v1/orders", Some(body))
            .await
    }

    /// The ids in the "my orders" read model (at most 100).
    pub(crate) async fn orders_seen(&self) -> Option<Vec<String>> {
        let path = format!("/v1/order-history?customer={}&limit=100", self.name);
        let (status, body) = self.send(reqwest::Method::GET, &path, None).await;
        (status == 200).then(|| ids(&body["orders"], "id"))
    }

    /// The order ids of this customer's notifications, one per event.
    pub(crate) async fn notified(&self) -> Option<Vec<String>> {
        let path = format!("/v1/notifications?customer={}", self.name);
        let (status, body) = self.send(reqwest::Method::GET, &path, None).await;
        (status == 200).then(|| ids(&body["notifications"], "order_id"))
    }
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| o[field].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
