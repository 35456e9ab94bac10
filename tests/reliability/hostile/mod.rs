//! Hostile input at the HTTP edge: oversized and endless bodies, slow clients,
//! header floods, invalid UTF-8, deep nesting, huge arrays, path tricks and
//! secrets in odd encodings. The bridge answers each with the right status,
//! never crashes, and keeps serving everyone else.
//!
//! [`transport`]: bodies and headers that are too big, too slow or endless;
//! [`content`]: what a well-formed request can carry that is still hostile.

use crate::common::fake_hss::FakeHss;
use crate::common::helpers::*;
use crate::reliability::raw_http::RawResponse;
use crate::reliability::support::*;

pub(super) const MIB: usize = 1024 * 1024;

/// The bridge with the contract's default body limit (1 MiB).
pub(super) async fn app(hss: &FakeHss) -> TestApp {
    spawn_app_with(&hss.uri(), |s| {
        s.server.max_body_bytes = MIB;
        s.batch.window_ms = 200;
    })
    .await
}

/// A normal, valid push still gets its 202.
pub(super) async fn still_serving(app: &TestApp, tag: &str) {
    let push = signed_push(Sender::SwrEe, tag);
    let response = app
        .post_webhook(push.source, &push.body, &push.headers)
        .await;
    assert_eq!(response.status(), 202, "a valid push after the abuse");
}

pub(super) fn assert_error(response: &RawResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body_text());
    assert_eq!(response.json()["error"], code, "{}", response.body_text());
}

pub(super) fn webhook_head(source: &str, extra: &str) -> String {
    format!(
        "POST /webhooks/{source} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: {TOKEN_NEW}\r\n{extra}"
    )
}

mod content;
mod transport;
