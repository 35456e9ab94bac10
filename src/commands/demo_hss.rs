//! The demo's stand-in for HSS and SWR EE: a local HTTP server that serves
//! both scan APIs and `ShowInstanceArtifact`, checks each request's
//! SDK-HMAC-SHA256 signature (and the scan bodies and queries) the way the real
//! services would, and records what it got. It knows one artifact, the
//! manifest of the sample push by digest, and answers with its tags.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Map, Value, json};

use crate::hss::HssApi;
use crate::hss::signer::{SignableRequest, authorization};
use crate::secret::Secret;

/// Every class bit `scan_scope` may carry (`all`).
const SCAN_SCOPE_ALL: i64 = 0x7fff_ffff;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct ReceivedScan {
    pub api: HssApi,
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub signature_valid: bool,
    /// What HSS would refuse in the query or body; empty when it would take it.
    pub problems: Vec<String>,
}

#[derive(Clone)]
struct Credentials {
    ak: String,
    sk: Secret,
}

/// One `ShowInstanceArtifact` request the stand-in received.
#[derive(Debug, Clone)]
pub struct ReceivedLookup {
    pub method: String,
    pub uri: String,
    pub signature_valid: bool,
}

/// The one artifact the stand-in SWR EE knows: `(digest, tags)`.
#[derive(Clone)]
pub struct KnownArtifact {
    pub digest: &'static str,
    pub tags: &'static [&'static str],
}

pub struct StandInHss {
    pub endpoint: String,
    received: Arc<Mutex<Vec<ReceivedScan>>>,
    artifact_requests: Arc<Mutex<Vec<ReceivedLookup>>>,
    handle: ServerHandle,
}

impl StandInHss {
    pub fn start(ak: &str, sk: &str, artifact: KnownArtifact) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let artifact_requests = Arc::new(Mutex::new(Vec::new()));
        let credentials = Credentials {
            ak: ak.to_string(),
            sk: Secret::literal(sk),
        };
        let state = web::Data::new((credentials.clone(), Arc::clone(&received)));
        let swr_state = web::Data::new((credentials, Arc::clone(&artifact_requests), artifact));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(swr_state.clone())
                .route(
                    "/v2/{project_id}/instances/{instance_id}/namespaces/{namespace}/repositories/{repository}/artifacts/{digest}",
                    web::get().to(show_instance_artifact),
                )
                .route(
                    "/v5/{project_id}/image/batch-scan",
                    web::post().to(
                        |request: HttpRequest, body: web::Bytes, state: web::Data<State>| {
                            scan(HssApi::BatchScan, request, body, state)
                        },
                    ),
                )
                .route(
                    "/v5/{project_id}/image/image-scan/tasks",
                    web::post().to(
                        |request: HttpRequest, body: web::Bytes, state: web::Data<State>| {
                            scan(HssApi::ScanTasks, request, body, state)
                        },
                    ),
                )
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self {
            endpoint,
            received,
            artifact_requests,
            handle,
        })
    }

    pub fn received(&self) -> Vec<ReceivedScan> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The `ShowInstanceArtifact` requests, in arrival order.
    pub fn artifact_requests(&self) -> Vec<ReceivedLookup> {
        self.artifact_requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

type State = (Credentials, Arc<Mutex<Vec<ReceivedScan>>>);
type SwrState = (Credentials, Arc<Mutex<Vec<ReceivedLookup>>>, KnownArtifact);

fn request_headers(request: &HttpRequest) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn request_query(request: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(request.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default()
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(
        json!({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"}),
    )
}

/// `ShowInstanceArtifact`, answered in the SDK's response shape.
async fn show_instance_artifact(
    request: HttpRequest,
    path: web::Path<(String, String, String, String, String)>,
    state: web::Data<SwrState>,
) -> HttpResponse {
    let (credentials, received, artifact) = state.get_ref();
    let headers = request_headers(&request);
    let signature_valid = verify(
        credentials,
        &request,
        &request_query(&request),
        &headers,
        &[],
    );
    if let Ok(mut list) = received.lock() {
        list.push(ReceivedLookup {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            signature_valid,
        });
    }
    if !signature_valid {
        return unauthorized();
    }
    let (_, _, _, repository, digest) = path.into_inner();
    if digest != artifact.digest {
        return HttpResponse::NotFound().json(
            json!({"errorCode": "SVCSTG.SWR.4040003", "errorMessage": "artifact not found"}),
        );
    }
    let tags: Vec<Value> = artifact
        .tags
        .iter()
        .enumerate()
        .map(|(id, name)| json!({"id": id + 1, "name": name}))
        .collect();
    HttpResponse::Ok().json(json!({
        "digest": digest,
        "repository_name": repository,
        "media_type": "application/vnd.docker.container.image.v1+json",
        "manifest_media_type": "application/vnd.docker.distribution.manifest.v2+json",
        "tags": tags,
    }))
}

async fn scan(
    api: HssApi,
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let (credentials, received) = state.get_ref();
    let headers = request_headers(&request);
    let query = request_query(&request);
    let signature_valid = verify(credentials, &request, &query, &headers, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let problems = match api {
        HssApi::BatchScan => check_batch_scan(&parsed),
        HssApi::ScanTasks => check_scan_tasks(&query, &parsed),
    };
    let answer = if !signature_valid {
        unauthorized()
    } else if !problems.is_empty() {
        HttpResponse::BadRequest()
            .json(json!({"error_code": "HSS.0001", "error_msg": problems.join("; ")}))
    } else {
        match api {
            HssApi::BatchScan => HttpResponse::Ok().json(json!({})),
            // CreateManualImageScanTask answers with no body.
            HssApi::ScanTasks => HttpResponse::Ok().finish(),
        }
    };
    if let Ok(mut list) = received.lock() {
        list.push(ReceivedScan {
            api,
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers,
            body: parsed,
            signature_valid,
            problems,
        });
    }
    answer
}

/// Re-signs the request as received, using exactly the headers it claims to sign.
fn verify(
    credentials: &Credentials,
    request: &HttpRequest,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
) -> bool {
    let Some(given) = header(headers, "authorization") else {
        return false;
    };
    let Some(signed_names) = given
        .split(", ")
        .find_map(|part| part.strip_prefix("SignedHeaders="))
    else {
        return false;
    };
    let signed: Vec<(String, String)> = signed_names
        .split(';')
        .filter_map(|name| header(headers, name).map(|value| (name.to_string(), value)))
        .collect();
    let expected = authorization(
        &credentials.ak,
        &credentials.sk,
        &SignableRequest {
            method: request.method().as_str(),
            path: request.path(),
            query,
            headers: &signed,
            body,
        },
    );
    expected.is_ok_and(|expected| expected == given)
}

fn header(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

/// The `BatchScanSwrImage` body rules: a known `image_type`, a non-empty
/// `image_info_list` of named images, instance fields exactly for instance images.
fn check_batch_scan(body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(object) = body.as_object() else {
        return vec!["body is not a JSON object".into()];
    };
    unknown_keys(
        object,
        &["image_type", "image_info_list"],
        "body",
        &mut problems,
    );
    let image_type = object.get("image_type").and_then(Value::as_str);
    let is_instance = match image_type {
        Some("private_image" | "shared_image") => false,
        Some("instance_image") => true,
        _ => {
            problems
                .push("image_type must be private_image, shared_image or instance_image".into());
            false
        }
    };
    let items = images(object, "image_info_list", &mut problems);
    for (index, item) in items.iter().enumerate() {
        let at = format!("image_info_list[{index}]");
        let Some(item) = item.as_object() else {
            problems.push(format!("{at} is not an object"));
            continue;
        };
        unknown_keys(
            item,
            &[
                "namespace",
                "image_name",
                "image_version",
                "instance_id",
                "instance_url",
            ],
            &at,
            &mut problems,
        );
        named_image(item, &at, &mut problems);
        instance_fields(item, is_instance, &at, &mut problems);
    }
    problems
}

/// The `CreateManualImageScanTask` rules: `global_image_type=registry`, a
/// scope of known class bits, `rate_limit` 0..=1000, `is_all` false with a
/// non-empty `image_info` of named SWR images, instance fields exactly for
/// `SwrEnterprise`, digests as `sha256:` hex.
fn check_scan_tasks(query: &[(String, String)], body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let image_types: Vec<&str> = query
        .iter()
        .filter(|(key, _)| key == "global_image_type")
        .map(|(_, value)| value.as_str())
        .collect();
    if image_types != ["registry"] {
        problems.push(format!(
            "query must carry global_image_type=registry once, got {image_types:?}"
        ));
    }
    let Some(object) = body.as_object() else {
        problems.push("body is not a JSON object".into());
        return problems;
    };
    unknown_keys(
        object,
        &[
            "scan_scope",
            "rate_limit",
            "is_all",
            "query_info",
            "image_info",
        ],
        "body",
        &mut problems,
    );
    match object.get("scan_scope").and_then(Value::as_i64) {
        Some(scope) if scope > 0 && scope & !SCAN_SCOPE_ALL == 0 => {}
        other => problems.push(format!(
            "scan_scope must be a non-zero OR of risk-class bits, got {other:?}"
        )),
    }
    if !object
        .get("rate_limit")
        .and_then(Value::as_i64)
        .is_some_and(|limit| (0..=1000).contains(&limit))
    {
        problems.push("rate_limit must be an integer from 0 to 1000".into());
    }
    if object.get("is_all") != Some(&Value::Bool(false)) {
        problems.push("is_all must be false: only the listed images are to be scanned".into());
    }
    let items = images(object, "image_info", &mut problems);
    for (index, item) in items.iter().enumerate() {
        let at = format!("image_info[{index}]");
        let Some(item) = item.as_object() else {
            problems.push(format!("{at} is not an object"));
            continue;
        };
        unknown_keys(
            item,
            &[
                "namespace",
                "image_name",
                "image_version",
                "registry_type",
                "image_digest",
                "instance_id",
                "instance_url",
            ],
            &at,
            &mut problems,
        );
        named_image(item, &at, &mut problems);
        let is_instance = match item.get("registry_type").and_then(Value::as_str) {
            Some("SwrPrivate" | "SwrShared") => false,
            Some("SwrEnterprise") => true,
            other => {
                problems.push(format!(
                    "{at}.registry_type must be SwrPrivate, SwrShared or SwrEnterprise, got {other:?}"
                ));
                false
            }
        };
        instance_fields(item, is_instance, &at, &mut problems);
        if let Some(digest) = item.get("image_digest") {
            let valid = digest
                .as_str()
                .and_then(|d| d.strip_prefix("sha256:"))
                .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
            if !valid {
                problems.push(format!("{at}.image_digest must be sha256:<64 hex digits>"));
            }
        }
    }
    problems
}

fn images<'b>(
    object: &'b Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> &'b [Value] {
    match object.get(key).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items,
        _ => {
            problems.push(format!("{key} must be a non-empty array"));
            &[]
        }
    }
}

fn unknown_keys(object: &Map<String, Value>, known: &[&str], at: &str, problems: &mut Vec<String>) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(format!("{at} has an unknown field {key:?}"));
        }
    }
}

fn named_image(item: &Map<String, Value>, at: &str, problems: &mut Vec<String>) {
    for key in ["namespace", "image_name", "image_version"] {
        let named = item
            .get(key)
            .and_then(Value::as_str)
            .is_some_and(|value| !value.is_empty());
        if !named {
            problems.push(format!("{at}.{key} must be a non-empty string"));
        }
    }
}

fn instance_fields(
    item: &Map<String, Value>,
    is_instance: bool,
    at: &str,
    problems: &mut Vec<String>,
) {
    let has_id = item
        .get("instance_id")
        .and_then(Value::as_str)
        .is_some_and(|id| !id.is_empty());
    if is_instance && !has_id {
        problems.push(format!(
            "{at}.instance_id is required for enterprise images"
        ));
    }
    for key in ["instance_id", "instance_url"] {
        if !is_instance && item.contains_key(key) {
            problems.push(format!("{at}.{key} is only for enterprise images"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn registry_query() -> Vec<(String, String)> {
        vec![("global_image_type".into(), "registry".into())]
    }

    fn enterprise_item() -> Value {
        json!({
            "namespace": "team-a", "image_name": "svc/api", "image_version": "1.2.3",
            "registry_type": "SwrEnterprise", "image_digest": DIGEST,
            "instance_id": "4a6b2f0e", "instance_url": "ee-demo.example"
        })
    }

    fn tasks(item: Value) -> Value {
        json!({"scan_scope": 0x000f_0f00, "rate_limit": 0, "is_all": false, "image_info": [item]})
    }

    #[test]
    fn a_well_formed_scan_task_passes() {
        assert_eq!(
            check_scan_tasks(&registry_query(), &tasks(enterprise_item())),
            Vec::<String>::new()
        );
        let private = json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrPrivate"});
        assert!(check_scan_tasks(&registry_query(), &tasks(private)).is_empty());
    }

    #[test]
    fn each_broken_rule_of_a_scan_task_is_named() {
        type Query = Vec<(String, String)>;
        let cases: Vec<(Query, Value, &str)> = vec![
            (
                vec![],
                tasks(enterprise_item()),
                "global_image_type=registry",
            ),
            (
                registry_query(),
                json!({"scan_scope": 0, "rate_limit": 0, "is_all": false, "image_info": [enterprise_item()]}),
                "scan_scope",
            ),
            (
                registry_query(),
                json!({"scan_scope": 0x1_0000_0000_i64, "rate_limit": 0, "is_all": false, "image_info": [enterprise_item()]}),
                "scan_scope",
            ),
            (
                registry_query(),
                json!({"scan_scope": 1, "rate_limit": 1001, "is_all": false, "image_info": [enterprise_item()]}),
                "rate_limit",
            ),
            (
                registry_query(),
                json!({"scan_scope": 1, "rate_limit": 0, "is_all": true, "image_info": [enterprise_item()]}),
                "is_all",
            ),
            (
                registry_query(),
                json!({"scan_scope": 1, "rate_limit": 0, "is_all": false, "image_info": []}),
                "image_info must be",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "Harbor"}),
                ),
                "registry_type",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrShared", "instance_id": "x"}),
                ),
                "only for enterprise",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrEnterprise"}),
                ),
                "instance_id is required",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrPrivate", "image_digest": "latest"}),
                ),
                "image_digest",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "", "image_version": "c", "registry_type": "SwrPrivate"}),
                ),
                "image_name",
            ),
            (
                registry_query(),
                tasks(
                    json!({"namespace": "a", "image_name": "b", "image_version": "c", "registry_type": "SwrPrivate", "tag": "c"}),
                ),
                "unknown field",
            ),
        ];
        for (query, body, expected) in cases {
            let problems = check_scan_tasks(&query, &body);
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "{expected:?} not in {problems:?} for {body}"
            );
        }
    }

    #[test]
    fn batch_scan_bodies_are_checked_too() {
        let good = json!({"image_type": "instance_image", "image_info_list": [
            {"namespace": "a", "image_name": "b", "image_version": "c", "instance_id": "i"}]});
        assert!(check_batch_scan(&good).is_empty());
        let scan_tasks_shape = tasks(enterprise_item());
        assert!(!check_batch_scan(&scan_tasks_shape).is_empty());
        let private_with_instance = json!({"image_type": "private_image", "image_info_list": [
            {"namespace": "a", "image_name": "b", "image_version": "c", "instance_id": "i"}]});
        assert!(!check_batch_scan(&private_with_instance).is_empty());
    }
}
