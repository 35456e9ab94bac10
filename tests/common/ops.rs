//! What an operator calls on a running app: `/metrics` scrapes and the
//! `/admin/*` API; and a quiet HSS for tests that never reach it.

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::helpers::{ADMIN_TOKEN, TestApp};
use crate::common::prometheus_text::Scrape;

const PREFIX: &str = "swr_scan_bridge_";

/// The full name of one of the bridge's metrics.
pub fn metric_name(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// `/metrics` as text, whatever its status.
pub async fn metrics_text(app: &TestApp) -> String {
    app.client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics text")
}

/// `/metrics`, checked to be a 200 in the Prometheus text format, parsed.
pub async fn scrape_metrics(app: &TestApp) -> Scrape {
    let response = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("scrape body");
    Scrape::parse(&text).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

pub async fn status_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// An admin route called with exactly the `Authorization` header given.
pub async fn admin_call(
    app: &TestApp,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = match method {
        "GET" => app.client.get(app.url(path)),
        _ => app.client.post(app.url(path)),
    };
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.expect("admin call")
}

/// A `POST` to an admin route with the right token.
pub async fn admin_post(app: &TestApp, path: &str) -> (u16, Value) {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    status_of(admin_call(app, "POST", path, Some(&bearer)).await).await
}

/// `/admin/flush`; the number of batches it sent.
pub async fn flush(app: &TestApp) -> u64 {
    let (status, body) = admin_post(app, "/admin/flush").await;
    assert_eq!(status, 200, "{body}");
    body["batches_sent"].as_u64().expect("batches_sent")
}

/// Posts a webhook that must be accepted (202).
pub async fn push(app: &TestApp, source: &str, body: &[u8], headers: &[(String, String)]) {
    let response = app.post_webhook(source, body, headers).await;
    assert_eq!(response.status(), 202);
}

/// An HSS that answers 200 to anything, for tests that never (or only
/// incidentally) reach it but need one for the app to start.
pub async fn quiet_hss() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}
