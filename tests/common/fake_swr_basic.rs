//! A stand-in for the SWR basic edition API on wiremock: a registry of
//! repositories and tags, served as `ListReposDetails` and
//! `ListRepositoryTags` serve them (SDK shapes, `updated_at` ordering,
//! `limit`/`offset` paging with `Content-Range`, `$` for `/` in repository
//! paths), after checking each request's AK/SK signature like the fake HSS.
//!
//! ```ignore
//! let swr = FakeSwr::start(AK, SK).await;
//! swr.push("team-a", "api", "1.0", "sha256:…");
//! // … point `swr.endpoint = swr.uri()` at it and run the bridge …
//! swr.answer_all_with(500);   // an outage, until swr.answer_normally()
//! ```

// A shared fixture: every test uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::fake_hss::{HssCredentials, Verdict, parse_query, unescape};

#[derive(Debug, Clone)]
struct FakeTag {
    digest: String,
    updated_ms: i64,
}

#[derive(Debug, Clone, Default)]
struct FakeRepository {
    updated_ms: i64,
    /// tag → what it points at now
    tags: BTreeMap<String, FakeTag>,
}

/// One request that reached the fake.
#[derive(Debug, Clone)]
pub struct SwrRequest {
    /// `list_repos_details`, `list_repository_tags`, or `other`.
    pub operation: &'static str,
    /// As sent (percent-encoded).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub verdict: Verdict,
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    /// (namespace, repository) → repository
    repositories: Mutex<BTreeMap<(String, String), FakeRepository>>,
    /// Every authenticated request is answered with this status while set.
    outage: Mutex<Option<u16>>,
    requests: Mutex<Vec<SwrRequest>>,
    /// SWR's clock: strictly increasing, so that every push is newer than the last.
    clock_ms: Mutex<i64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct FakeSwr {
    server: MockServer,
    state: Arc<State>,
    credentials: HssCredentials,
}

/// SWR's time format, e.g. `2017-09-11T03:00:02.542841141Z`.
fn swr_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("time in range")
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

fn wall_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl FakeSwr {
    /// An empty registry that accepts requests signed with this AK/SK.
    pub async fn start(access_key: &str, secret_key: &str) -> FakeSwr {
        let server = MockServer::start().await;
        let state = Arc::new(State::default());
        let credentials = HssCredentials::none();
        credentials.allow_access_key(access_key, secret_key, None);
        Mock::given(method("GET"))
            .respond_with(Responder {
                state: state.clone(),
                credentials: credentials.clone(),
            })
            .mount(&server)
            .await;
        FakeSwr {
            server,
            state,
            credentials,
        }
    }

    /// Base URL for `swr.endpoint`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    fn tick(&self, at_least: i64) -> i64 {
        let mut clock = lock(&self.state.clock_ms);
        *clock = (*clock + 1).max(at_least);
        *clock
    }

    /// Pushes `namespace/repository:tag` with `digest` now: the tag is created
    /// or moved, and it and its repository get a new update time.
    pub fn push(&self, namespace: &str, repository: &str, tag: &str, digest: &str) {
        let at = self.tick(wall_ms());
        self.push_at(namespace, repository, tag, digest, at);
    }

    /// Like [`FakeSwr::push`], at a given time (an old registry's content).
    pub fn push_at(&self, namespace: &str, repository: &str, tag: &str, digest: &str, at_ms: i64) {
        let mut repositories = lock(&self.state.repositories);
        let entry = repositories
            .entry((namespace.to_string(), repository.to_string()))
            .or_default();
        entry.updated_ms = entry.updated_ms.max(at_ms);
        entry.tags.insert(
            tag.to_string(),
            FakeTag {
                digest: digest.to_string(),
                updated_ms: at_ms,
            },
        );
    }

    /// Every authenticated request gets `status` (with an SWR error body) until
    /// [`FakeSwr::answer_normally`].
    pub fn answer_all_with(&self, status: u16) {
        *lock(&self.state.outage) = Some(status);
    }

    pub fn answer_normally(&self) {
        *lock(&self.state.outage) = None;
    }

    pub fn requests(&self) -> Vec<SwrRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn forget_requests(&self) {
        lock(&self.state.requests).clear();
    }

    pub fn requests_with_bad_signature(&self) -> Vec<SwrRequest> {
        self.requests()
            .into_iter()
            .filter(|r| matches!(r.verdict, Verdict::Rejected(_)))
            .collect()
    }

    pub fn credentials(&self) -> HssCredentials {
        self.credentials.clone()
    }
}

struct Responder {
    state: Arc<State>,
    credentials: HssCredentials,
}

/// An answer and its status (wiremock keeps a template's status to itself).
type Answer = (u16, ResponseTemplate);

/// SWR's error body (`errorCode`/`errorMessage`, and APIG's `error_code`/`error_msg`).
fn error(status: u16, code: &str, message: &str) -> Answer {
    let body = json!({
        "errorCode": code, "errorMessage": message, "error_code": code, "error_msg": message,
    });
    (status, ResponseTemplate::new(status).set_body_json(body))
}

/// `limit` and `offset` as SWR checks them (both or neither, numbers, limit
/// at most 1000), and the newest-first order the poller must ask for; the
/// reason of a 400 otherwise.
fn paging(query: &BTreeMap<String, String>) -> Result<(usize, usize), String> {
    let number = |key: &str, default: usize| match query.get(key) {
        None => Ok(default),
        Some(value) => value
            .parse::<usize>()
            .map_err(|_| format!("{key} is not a number")),
    };
    let limit = number("limit", 100)?;
    let offset = number("offset", 0)?;
    if query.contains_key("limit") != query.contains_key("offset") {
        return Err("offset and limit go together".into());
    }
    if limit > 1000 {
        return Err("limit is at most 1000".into());
    }
    if query.get("order_column").map(String::as_str) != Some("updated_at")
        || query.get("order_type").map(String::as_str) != Some("desc")
    {
        return Err("the bridge must ask newest first".into());
    }
    Ok((limit, offset))
}

fn paged(items: Vec<Value>, limit: usize, offset: usize) -> Answer {
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let end = (offset + page.len()).saturating_sub(1);
    let template = ResponseTemplate::new(200)
        .insert_header("Content-Range", format!("{offset}-{end}/{total}").as_str())
        .set_body_json(Value::Array(page));
    (200, template)
}

impl Responder {
    fn answer(&self, request: &Request, operation: &mut &'static str) -> Answer {
        let segments: Vec<String> = request
            .url
            .path()
            .trim_start_matches('/')
            .split('/')
            .map(unescape)
            .collect();
        let query: BTreeMap<String, String> = parse_query(request.url.query().unwrap_or(""))
            .into_iter()
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["v2", "manage", "repos"] => {
                *operation = "list_repos_details";
                if let Some(status) = *lock(&self.state.outage) {
                    return error(status, "SVCSTG.SWR.5000000", "fake outage");
                }
                let (limit, offset) = match paging(&query) {
                    Ok(paging) => paging,
                    Err(reason) => return error(400, "SVCSTG.SWR.4001000", &reason),
                };
                let repositories = lock(&self.state.repositories);
                let mut listed: Vec<(&(String, String), &FakeRepository)> = repositories
                    .iter()
                    .filter(|((namespace, _), _)| {
                        query
                            .get("namespace")
                            .is_none_or(|wanted| wanted == namespace)
                    })
                    .collect();
                listed.sort_by(|a, b| b.1.updated_ms.cmp(&a.1.updated_ms).then(a.0.cmp(b.0)));
                let items = listed
                    .into_iter()
                    .map(|((namespace, name), repository)| {
                        json!({
                            "name": name, "namespace": namespace, "category": "other",
                            "description": "", "size": 1024, "is_public": false,
                            "num_images": repository.tags.len(), "num_download": 0,
                            "created_at": swr_time(repository.updated_ms),
                            "updated_at": swr_time(repository.updated_ms),
                            "logo": "", "url": "",
                            "path": format!("swr.cn-north-4.myhuaweicloud.com/{namespace}/{name}"),
                            "internal_path": "", "domain_name": namespace,
                            "tags": repository.tags.keys().collect::<Vec<_>>(),
                            "status": false, "total_range": repositories.len(),
                        })
                    })
                    .collect();
                paged(items, limit, offset)
            }
            [
                "v2",
                "manage",
                "namespaces",
                namespace,
                "repos",
                repository,
                "tags",
            ] => {
                *operation = "list_repository_tags";
                if let Some(status) = *lock(&self.state.outage) {
                    return error(status, "SVCSTG.SWR.5000000", "fake outage");
                }
                let (limit, offset) = match paging(&query) {
                    Ok(paging) => paging,
                    Err(reason) => return error(400, "SVCSTG.SWR.4001000", &reason),
                };
                if repository.contains('/') {
                    return error(
                        404,
                        "SVCSTG.SWR.4040000",
                        "a / in a repository path is written $",
                    );
                }
                let name = repository.replace('$', "/");
                let repositories = lock(&self.state.repositories);
                let Some(found) = repositories.get(&(namespace.to_string(), name.clone())) else {
                    return error(404, "SVCSTG.SWR.4040002", "repository not found");
                };
                let mut tags: Vec<(&String, &FakeTag)> = found.tags.iter().collect();
                tags.sort_by(|a, b| b.1.updated_ms.cmp(&a.1.updated_ms).then(a.0.cmp(b.0)));
                let items = tags
                    .into_iter()
                    .enumerate()
                    .map(|(id, (tag, fake))| {
                        json!({
                            "id": id, "repo_id": 1, "Tag": tag, "image_id": fake.digest,
                            "manifest": "{}", "digest": fake.digest, "schema": 2,
                            "path": format!("swr.cn-north-4.myhuaweicloud.com/{namespace}/{name}:{tag}"),
                            "internal_path": "", "size": 1024, "is_trusted": false,
                            "created": swr_time(fake.updated_ms), "updated": swr_time(fake.updated_ms),
                            "deleted": "", "domain_id": "d", "scanned": false, "tag_type": 0,
                        })
                    })
                    .collect();
                paged(items, limit, offset)
            }
            _ => error(404, "SVCSTG.SWR.4040000", "no such route"),
        }
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let verdict = self.credentials.judge(request);
        let mut operation = "other";
        let (status, template) = match &verdict {
            Verdict::Rejected(reason) => error(401, "APIGW.0301", reason),
            _ => self.answer(request, &mut operation),
        };
        let mut requests = lock(&self.state.requests);
        let request_id = format!("fake-swr-{}", requests.len() + 1);
        requests.push(SwrRequest {
            operation,
            path: request.url.path().to_string(),
            query: parse_query(request.url.query().unwrap_or("")),
            verdict,
            status,
        });
        template.insert_header("X-Request-Id", request_id.as_str())
    }
}
