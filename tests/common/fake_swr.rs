//! A stand-in for the SWR Enterprise Edition API on wiremock, serving
//! `ShowInstanceArtifact`:
//! `GET /v2/{project_id}/instances/{instance_id}/namespaces/{namespace}/repositories/{repository}/artifacts/{digest}`.
//! It checks what SWR checks: the AK/SK signature (or IAM token) with the
//! same verifier and credentials as the fake HSS, the project and instance,
//! and a repository sent as ONE path segment (`/` as `%2F`); it answers with
//! the SDK's `ShowInstanceArtifactResponse` shape and records every request.
//!
//! ```ignore
//! let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
//! swr.put_artifact("team-a", "payments/api", DIGEST, &["v1", "latest"]);
//! ```

// A shared fixture: every test module uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::fake_hss::{HssCredentials, Reply, Verdict};

/// One request that reached the fake.
#[derive(Debug, Clone)]
pub struct SwrRequest {
    /// The raw path, as sent (percent-encoding kept).
    pub path: String,
    pub verdict: Verdict,
    pub status: u16,
}

#[derive(Default)]
struct State {
    /// (namespace, repository, digest) → tag names.
    artifacts: Mutex<HashMap<(String, String, String), Vec<String>>>,
    /// Answers for the next authenticated artifact requests, before any lookup.
    script: Mutex<VecDeque<Reply>>,
    requests: Mutex<Vec<SwrRequest>>,
    /// How long every answer takes.
    latency: Mutex<Duration>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct FakeSwr {
    server: MockServer,
    state: Arc<State>,
}

impl FakeSwr {
    /// Serves the artifacts of `instance_id` in `project_id` to callers that
    /// `credentials` (the fake HSS's) accepts.
    pub async fn start(credentials: HssCredentials, project_id: &str, instance_id: &str) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(State::default());
        Mock::given(method("GET"))
            .respond_with(Responder {
                state: state.clone(),
                credentials,
                project_id: project_id.to_string(),
                instance_id: instance_id.to_string(),
            })
            .mount(&server)
            .await;
        FakeSwr { server, state }
    }

    /// Base URL for `swr.endpoint`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Creates or replaces the artifact `digest` in `namespace/repository`
    /// with these tags (none: an untagged manifest).
    pub fn put_artifact(&self, namespace: &str, repository: &str, digest: &str, tags: &[&str]) {
        lock(&self.state.artifacts).insert(
            (namespace.into(), repository.into(), digest.into()),
            tags.iter().map(|tag| tag.to_string()).collect(),
        );
    }

    /// Answers for the next authenticated artifact requests, in order.
    pub fn respond_with_sequence(&self, replies: Vec<Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Every answer from now on takes `latency` (a slow registry).
    pub fn answer_after(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    pub fn requests(&self) -> Vec<SwrRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn requests_with_bad_signature(&self) -> Vec<SwrRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.verdict, Verdict::Rejected(_)))
            .collect()
    }
}

struct Responder {
    state: Arc<State>,
    credentials: HssCredentials,
    project_id: String,
    instance_id: String,
}

/// SWR's error body.
fn swr_error(status: u16, code: &str, message: &str) -> (ResponseTemplate, u16) {
    (
        ResponseTemplate::new(status)
            .set_body_json(json!({"errorCode": code, "errorMessage": message})),
        status,
    )
}

impl Responder {
    fn answer(&self, request: &Request, verdict: &Verdict) -> (ResponseTemplate, u16) {
        if let Verdict::Rejected(reason) = verdict {
            return (
                ResponseTemplate::new(401).set_body_json(json!({
                    "error_code": "APIGW.0301",
                    "error_msg": format!("Incorrect IAM authentication information: {reason}"),
                })),
                401,
            );
        }
        // Raw segments: a repository with a `/` not sent as `%2F` has more
        // segments than the route and is not found, as on the real service.
        let segments: Vec<&str> = request.url.path().split('/').skip(1).collect();
        let [
            "v2",
            project_id,
            "instances",
            instance_id,
            "namespaces",
            namespace,
            "repositories",
            repository,
            "artifacts",
            digest,
        ] = segments.as_slice()
        else {
            return swr_error(404, "SVCSTG.SWR.4040001", "no such route");
        };
        if *project_id != self.project_id {
            return swr_error(403, "SVCSTG.SWR.4030001", "the token's project differs");
        }
        if *instance_id != self.instance_id {
            return swr_error(404, "SVCSTG.SWR.4040002", "instance not found");
        }
        if let Some(reply) = lock(&self.state.script).pop_front() {
            let status = reply.status_code();
            return (reply.into_template(), status);
        }
        let decode = |segment: &str| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8_lossy()
                .into_owned()
        };
        let key = (decode(namespace), decode(repository), decode(digest));
        let Some(tags) = lock(&self.state.artifacts).get(&key).cloned() else {
            return swr_error(404, "SVCSTG.SWR.4040003", "artifact not found");
        };
        let tags: Vec<_> = tags
            .iter()
            .enumerate()
            .map(|(id, name)| json!({"id": id + 1, "artifact_id": 7, "repository_id": 3, "name": name, "push_time": "2026-11-28T09:30:15Z"}))
            .collect();
        (
            ResponseTemplate::new(200).set_body_json(json!({
                "id": 7,
                "digest": key.2,
                "repository_id": 3,
                "repository_name": key.1,
                "namespace_id": 2,
                "type": "IMAGE",
                "media_type": "application/vnd.docker.container.image.v1+json",
                "manifest_media_type": "application/vnd.docker.distribution.manifest.v2+json",
                "size": 1024,
                "push_time": "2026-11-28T09:30:15Z",
                "tags": if tags.is_empty() { serde_json::Value::Null } else { json!(tags) },
            })),
            200,
        )
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let verdict = self.credentials.judge(request);
        let (template, status) = self.answer(request, &verdict);
        lock(&self.state.requests).push(SwrRequest {
            path: request.url.path().to_string(),
            verdict,
            status,
        });
        let latency = *lock(&self.state.latency);
        template
            .insert_header("X-Request-Id", "fake-swr-req")
            .set_delay(latency)
    }
}
