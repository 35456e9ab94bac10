//! What every scenario shares: signed pushes for each verification scheme,
//! delivery accounting over what the fake HSS received, and the one-line
//! summary each scenario prints.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::fake_hss::FakeHss;
use crate::common::helpers::*;
use crate::common::ops::metrics_text;

/// The three webhook senders of the base configuration, one per scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    /// `swr-ee`: Harbor payload, `token` scheme, instance images.
    SwrEe,
    /// `harbor-ce`: CloudEvents payload, `standard-webhooks` scheme, private images.
    HarborCe,
    /// `registry`: distribution notification, `hmac-sha256` scheme, shared images.
    Registry,
}

impl Sender {
    pub const ALL: [Sender; 3] = [Sender::SwrEe, Sender::HarborCe, Sender::Registry];
}

/// One signed webhook, ready to send, and the image HSS must eventually see.
#[derive(Debug, Clone)]
pub struct Push {
    pub source: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// `image_type|namespace/name:tag`, as [`delivered_images`] keys them.
    pub image: String,
}

/// A push of the image tagged `tag`, signed for `sender`'s scheme now.
pub fn signed_push(sender: Sender, tag: &str) -> Push {
    match sender {
        Sender::SwrEe => Push {
            source: "swr-ee",
            body: harbor_push("team-a", "api", tag),
            headers: token(TOKEN_NEW),
            image: format!("instance_image|team-a/api:{tag}"),
        },
        Sender::HarborCe => {
            let body = cloudevents_push("library", "nginx", tag);
            Push {
                source: "harbor-ce",
                headers: standard_webhooks(WHSEC_A, &format!("msg-{tag}"), now(), &body),
                body,
                image: format!("private_image|library/nginx:{tag}"),
            }
        }
        Sender::Registry => {
            let body = distribution_push("team-b/worker", tag);
            Push {
                source: "registry",
                headers: hmac_sha256(HMAC_SECRET, &body),
                body,
                image: format!("shared_image|team-b/worker:{tag}"),
            }
        }
    }
}

/// A Harbor CloudEvents `harbor.artifact.pushed` event for one image.
pub fn cloudevents_push(namespace: &str, name: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "specversion": "1.0",
        "id": format!("ce-{namespace}-{name}-{tag}"),
        "source": "/projects/3/webhook/policies/12",
        "type": "harbor.artifact.pushed",
        "datacontenttype": "application/json",
        "time": "2026-11-28T09:30:00Z",
        "data": {
            "resources": [{
                "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
                "tag": tag,
                "resource_url": format!("harbor.example.internal/{namespace}/{name}:{tag}")
            }],
            "repository": {
                "name": name,
                "namespace": namespace,
                "repo_full_name": format!("{namespace}/{name}"),
                "repo_type": "public"
            }
        }
    }))
    .expect("json")
}

/// A distribution (registry) notification with one tagged manifest push.
pub fn distribution_push(repository: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "events": [{
            "id": format!("ev-{repository}-{tag}"),
            "timestamp": "2026-11-28T09:30:01.123Z",
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:4444444444444444444444444444444444444444444444444444444444444444",
                "repository": repository,
                "tag": tag
            },
            "request": {"id": "b2c3", "host": "registry.example.internal", "method": "PUT"}
        }]
    }))
    .expect("json")
}

/// The outcome of sending one push: the status, or `None` when no answer came
/// (connection refused or reset: the bridge was down).
pub async fn send(client: &reqwest::Client, base_url: &str, push: &Push) -> Option<(u16, Value)> {
    let mut request = client
        .post(format!("{base_url}/webhooks/{}", push.source))
        .header("Content-Type", "application/json")
        .timeout(Duration::from_secs(10))
        .body(push.body.clone());
    for (name, value) in &push.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// `image_type|namespace/name:tag` of every item of a batch-scan body.
pub fn images_of(batch: &Value) -> Vec<String> {
    let image_type = batch["image_type"].as_str().unwrap_or("?");
    batch["image_info_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            format!(
                "{image_type}|{}/{}:{}",
                item["namespace"].as_str().unwrap_or("?"),
                item["image_name"].as_str().unwrap_or("?"),
                item["image_version"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// For each image: in how many 2xx-answered batch-scan requests it arrived.
pub fn delivered_images(hss: &FakeHss) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for batch in hss.received_batches() {
        for image in images_of(&batch) {
            *counts.entry(image).or_insert(0) += 1;
        }
    }
    counts
}

/// Requests that named one image twice (the contract forbids it).
pub fn requests_with_repeats(hss: &FakeHss) -> usize {
    hss.requests()
        .iter()
        .filter(|request| {
            let mut images = images_of(&request.json());
            let total = images.len();
            images.sort();
            images.dedup();
            images.len() != total
        })
        .count()
}

/// The value of an unlabelled sample in a Prometheus text scrape.
pub async fn metric(app: &TestApp, name: &str) -> f64 {
    metrics_text(app)
        .await
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// One scenario's counts, printed as a single `key=value` line on stderr (and
/// appended to the file `RELIABILITY_FIGURES` names, when set).
pub struct Summary {
    scenario: &'static str,
    started: Instant,
    fields: Vec<(&'static str, String)>,
}

impl Summary {
    pub fn start(scenario: &'static str) -> Summary {
        Summary {
            scenario,
            started: Instant::now(),
            fields: Vec::new(),
        }
    }

    pub fn count(&mut self, name: &'static str, value: impl Display) -> &mut Summary {
        self.fields.push((name, value.to_string()));
        self
    }

    pub fn print(&self) {
        let mut line = format!("[reliability] {}:", self.scenario);
        for (name, value) in &self.fields {
            line.push_str(&format!(" {name}={value}"));
        }
        line.push_str(&format!(
            " elapsed_ms={}",
            self.started.elapsed().as_millis()
        ));
        eprintln!("{line}");
        if let Ok(path) = std::env::var("RELIABILITY_FIGURES")
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}
