//! Security checks: admin routes closed without the token, no secret in any
//! answer or in the metrics, constant-time comparisons, and the per-source
//! rate limit. (TLS verification: `tls.rs`; secrets in logs: the api suite's
//! `hss_client` tests.)

use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::future::join_all;
use hmac::{KeyInit, Mac};
use sha2::Sha256;

use crate::common::fake_hss::{FakeHss, Reply};
use crate::common::helpers::*;
use crate::common::ops::{admin_call, metrics_text};
use crate::reliability::support::*;

const ADMIN_ROUTES: [(&str, &str); 4] = [
    ("GET", "/admin/pending"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/1/retry"),
    ("POST", "/admin/flush"),
];

#[tokio::test]
async fn admin_routes_are_closed_without_the_token() {
    let hss = FakeHss::start(AK, SK).await;
    let app = spawn_app_with(&hss.uri(), |_| {}).await;
    // Something to flush: an unauthorized flush must not send it.
    let push = signed_push(Sender::SwrEe, "kept");
    assert_eq!(
        app.post_webhook(push.source, &push.body, &push.headers)
            .await
            .status(),
        202
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let wrong = [
        None,
        Some(String::new()),
        Some(ADMIN_TOKEN.to_string()),
        Some(format!("Bearer {ADMIN_TOKEN}x")),
        Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
        Some(format!("Bearer {}", ADMIN_TOKEN.to_uppercase())),
        Some(format!("Bearer {}", b64.encode(ADMIN_TOKEN))),
        Some(format!(
            "Basic {}",
            b64.encode(format!("admin:{ADMIN_TOKEN}"))
        )),
        Some(format!("Bearer  {ADMIN_TOKEN}")),
        Some(format!("Bearer {TOKEN_NEW}")),
        Some("Bearer".to_string()),
    ];
    for (method, path) in ADMIN_ROUTES {
        for authorization in &wrong {
            let response = admin_call(&app, method, path, authorization.as_deref()).await;
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(
                response
                    .headers()
                    .get("WWW-Authenticate")
                    .map(|v| v.as_bytes()),
                Some(&b"Bearer"[..])
            );
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"], "unauthorized");
        }
    }
    assert!(
        hss.requests().is_empty(),
        "an unauthorized flush sent a batch"
    );
    assert_eq!(app.pending_count().await, 1);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let response = admin_call(&app, "GET", "/admin/pending", Some(&bearer)).await;
    assert_eq!(response.status(), 200);
    app.stop().await;

    // Without server.admin_token the routes do not exist, whatever is sent.
    let app = spawn_app_with(&hss.uri(), |s| s.server.admin_token = None).await;
    for (method, path) in ADMIN_ROUTES {
        for authorization in [None, Some(bearer.as_str())] {
            let response = admin_call(&app, method, path, authorization).await;
            assert_eq!(response.status(), 404, "{method} {path}");
            let body: serde_json::Value = response.json().await.expect("json");
            assert_eq!(body["error"], "admin_disabled");
        }
    }
    app.stop().await;
}

async fn transcript(response: reqwest::Response) -> String {
    let mut text = format!("{}\n", response.status());
    for (name, value) in response.headers() {
        text.push_str(&format!(
            "{name}: {}\n",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    text.push_str(&response.text().await.unwrap_or_default());
    text
}

#[tokio::test]
async fn no_secret_appears_in_any_answer_or_in_the_metrics() {
    let mut summary = Summary::start("security_no_secret_in_answers");
    let hss = FakeHss::start(AK, SK).await;
    // One batch refused for good, so the dead letters hold an HSS error too.
    hss.respond_with_sequence(vec![Reply::error(400, "HSS.1001", "invalid image")]);
    let app = spawn_app_with(&hss.uri(), |s| s.batch.window_ms = 100).await;
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut derived: Vec<String> = Vec::new();

    let harbor = harbor_push("team-a", "api", "v1");
    for value in [
        &TOKEN_NEW[..TOKEN_NEW.len() - 1],
        &format!("{TOKEN_NEW}x"),
        TOKEN_OLD.to_uppercase().as_str(),
        "",
    ] {
        let response = app.post_webhook("swr-ee", &harbor, &token(value)).await;
        answers.push((format!("token {value:?}"), transcript(response).await));
    }
    let ce = cloudevents_push("library", "nginx", "v1");
    let good = standard_webhooks(WHSEC_A, "leak-1", now(), &ce);
    derived.push(good[2].1.trim_start_matches("v1,").to_string());
    let mut forged = good.clone();
    forged[2].1 = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let stale = standard_webhooks(WHSEC_B, "leak-2", now() - 3_600, &ce);
    for (case, headers) in [("forged", forged), ("stale", stale), ("none", Vec::new())] {
        let response = app.post_webhook("harbor-ce", &ce, &headers).await;
        answers.push((
            format!("standard-webhooks {case}"),
            transcript(response).await,
        ));
    }
    let dist = distribution_push("team-b/worker", "v1");
    let mut mac = <hmac::Hmac<Sha256>>::new_from_slice(HMAC_SECRET.as_bytes()).expect("key");
    mac.update(&dist);
    derived.push(hex::encode(mac.finalize().into_bytes()));
    let wrong_mac = vec![(
        "X-Hub-Signature-256".to_string(),
        format!("sha256={}", "0".repeat(64)),
    )];
    let response = app.post_webhook("registry", &dist, &wrong_mac).await;
    answers.push(("hmac wrong".into(), transcript(response).await));

    for (method, path) in ADMIN_ROUTES {
        let response = admin_call(&app, method, path, Some(&format!("Bearer {TOKEN_NEW}"))).await;
        answers.push((format!("admin {path}"), transcript(response).await));
    }
    let response = app.post_webhook("nope", &harbor, &token(TOKEN_NEW)).await;
    answers.push(("unknown source".into(), transcript(response).await));
    let big = vec![b' '; 70_000];
    let response = app.post_webhook("swr-ee", &big, &token(TOKEN_NEW)).await;
    answers.push(("too large".into(), transcript(response).await));
    let response = app
        .post_webhook("swr-ee", b"{not json", &token(TOKEN_NEW))
        .await;
    answers.push(("malformed".into(), transcript(response).await));

    // A push that HSS refuses for good, then every read-only view.
    let push = signed_push(Sender::SwrEe, "refused");
    assert_eq!(
        app.post_webhook(push.source, &push.body, &push.headers)
            .await
            .status(),
        202
    );
    wait_until(
        Duration::from_secs(10),
        "the refusal dead-lettered",
        || async { app.pending_count().await == 0 },
    )
    .await;
    for path in ["/admin/pending", "/admin/dead-letters"] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin");
        answers.push((path.into(), transcript(response).await));
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        let response = app.client.get(app.url(path)).send().await.expect("get");
        answers.push((path.into(), transcript(response).await));
    }
    assert!(answers.iter().any(|(_, text)| text.contains("HSS.1001")));

    let mut checked = 0;
    for secret in base_config_secrets().iter().chain(&derived) {
        for (case, text) in &answers {
            assert!(
                !text.contains(secret.as_str()),
                "{case} shows a secret: {text}"
            );
            checked += 1;
        }
    }
    summary
        .count("answers_checked", answers.len())
        .count("secret_forms", base_config_secrets().len() + derived.len())
        .count("comparisons", checked)
        .print();
    app.stop().await;
}

/// Returns the text of `function` in `source` (from its `fn` line to the
/// closing brace at the start of a line).
fn function_text<'s>(source: &'s str, function: &str) -> &'s str {
    let start = source
        .find(&format!("fn {function}("))
        .unwrap_or_else(|| panic!("fn {function} not found"));
    let end = source[start..]
        .find("\n}\n")
        .map_or(source.len(), |offset| start + offset);
    &source[start..end]
}

fn read_source(path: &str) -> String {
    let full = format!("{}/src/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

/// Review, encoded: every comparison with a webhook secret, a MAC or the
/// admin token goes through `subtle`'s constant-time equality (no timing
/// assertions: they would be flaky; this fails if a plain `==` creeps in).
#[test]
fn secret_comparisons_go_through_constant_time_equality() {
    let verify = read_source("intake/verify/mod.rs");
    let token = function_text(&verify, "verify_token");
    assert!(token.contains(".ct_eq("), "{token}");
    assert!(
        token.contains("Sha256::digest"),
        "token length hidden by a digest"
    );
    let any_match = function_text(&verify, "any_match");
    assert!(any_match.contains(".ct_eq("), "{any_match}");
    for scheme in ["verify_standard_webhooks", "verify_hmac_sha256"] {
        let text = function_text(&verify, scheme);
        assert!(
            text.contains("any_match("),
            "{scheme} compares MACs via any_match"
        );
        assert!(
            !text.contains("=="),
            "{scheme} has a plain comparison: {text}"
        );
    }
    let admin = read_source("ops/admin.rs");
    let authorize = function_text(&admin, "authorize");
    assert!(authorize.contains("token.matches("), "{authorize}");
    assert!(!authorize.contains("=="), "{authorize}");
    let secret = read_source("secret.rs");
    let matches = function_text(&secret, "matches");
    assert!(matches.contains(".ct_eq("), "{matches}");
    assert!(
        matches.contains("Sha256::digest"),
        "admin token length hidden by a digest"
    );

    // Nowhere in the crate is an exposed secret compared with `==`.
    let mut offenders = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src"
    ))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("source");
                for (number, line) in text.lines().enumerate() {
                    if line.contains(".expose()") && (line.contains("==") || line.contains("!=")) {
                        offenders.push(format!("{}:{}: {line}", path.display(), number + 1));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_source_rate_limit_answers_429() {
    const LIMIT: u32 = 5;
    const BURST: usize = 40;
    let mut summary = Summary::start("security_rate_limit");
    let hss = FakeHss::start(AK, SK).await;
    let app = spawn_app_with(&hss.uri(), |s| {
        let mut limited = s
            .sources
            .iter()
            .find(|source| source.name == "swr-ee")
            .cloned()
            .expect("swr-ee");
        limited.name = "limited".into();
        limited.rate_limit_per_s = Some(LIMIT);
        s.sources.push(limited);
    })
    .await;

    let started = Instant::now();
    let sends = (0..BURST).map(|i| {
        let body = harbor_push("team-a", "api", &format!("r{i}"));
        let app = &app;
        async move {
            let limited = app.post_webhook("limited", &body, &token(TOKEN_NEW)).await;
            let limited_status = limited.status().as_u16();
            let retry_after = limited
                .headers()
                .get("Retry-After")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let limited_body: serde_json::Value = limited.json().await.unwrap_or_default();
            let other = app.post_webhook("swr-ee", &body, &token(TOKEN_NEW)).await;
            (
                limited_status,
                retry_after,
                limited_body,
                other.status().as_u16(),
            )
        }
    });
    let results = join_all(sends).await;
    let elapsed = started.elapsed();
    let admitted = results.iter().filter(|r| r.0 == 202).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(
        admitted + refused.len(),
        BURST,
        "only 202 or 429: {results:?}"
    );
    // Governor's bucket: LIMIT at once, then one more every 1/LIMIT s.
    let allowed = LIMIT as usize + (elapsed.as_secs_f64() * f64::from(LIMIT)).ceil() as usize;
    assert!(
        (1..=allowed).contains(&admitted),
        "{admitted} admitted in {elapsed:?}, at most {allowed} allowed"
    );
    assert!(!refused.is_empty());
    for (_, retry_after, body, _) in &refused {
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["error"], "rate_limited");
    }
    assert!(
        results.iter().all(|r| r.3 == 202),
        "another source is not limited by this one's budget"
    );
    let scrape = metrics_text(&app).await;
    let counted = scrape
        .lines()
        .find(|line| {
            line.starts_with("swr_scan_bridge_webhooks_total")
                && line.contains("source=\"limited\"")
                && line.contains("reason=\"rate_limited\"")
        })
        .and_then(|line| line.rsplit(' ').next()?.parse::<usize>().ok());
    assert_eq!(counted, Some(refused.len()));

    // The budget refills: a second later the source is admitted again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let again = app
        .post_webhook(
            "limited",
            &harbor_push("team-a", "api", "later"),
            &token(TOKEN_NEW),
        )
        .await;
    assert_eq!(again.status(), 202);

    summary
        .count("limit_per_s", LIMIT)
        .count("burst", BURST)
        .count("admitted", admitted)
        .count("answered_429", refused.len())
        .count(
            "other_source_admitted",
            results.iter().filter(|r| r.3 == 202).count(),
        )
        .print();
    app.stop().await;
}
