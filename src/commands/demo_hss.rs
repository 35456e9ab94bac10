//! The demo's stand-in for HSS and SWR EE: a local HTTP server that serves
//! both scan APIs and `ShowInstanceArtifact`, checks each request's
//! SDK-HMAC-SHA256 signature (and the scan bodies and queries) the way the real
//! services would, and records what it got. It knows one artifact, the
//! manifest of the sample push by digest, and answers with its tags.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use super::hss_rules::{check_batch_scan, check_scan_tasks};
use crate::hss::HssApi;
use crate::hss::signer::{SignableRequest, authorization};
use crate::secret::Secret;

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
