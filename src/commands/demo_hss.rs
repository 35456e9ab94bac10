//! The demo's stand-in for HSS: a local HTTP server that checks each
//! batch-scan request's SDK-HMAC-SHA256 signature and records what it got.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use crate::hss::signer::{SignableRequest, authorization};
use crate::secret::Secret;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct ReceivedScan {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    pub signature_valid: bool,
}

#[derive(Clone)]
struct Credentials {
    ak: String,
    sk: Secret,
}

pub struct StandInHss {
    pub endpoint: String,
    received: Arc<Mutex<Vec<ReceivedScan>>>,
    handle: ServerHandle,
}

impl StandInHss {
    pub fn start(ak: &str, sk: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = web::Data::new((
            Credentials {
                ak: ak.to_string(),
                sk: Secret::literal(sk),
            },
            Arc::clone(&received),
        ));
        let server = HttpServer::new(move || {
            App::new().app_data(state.clone()).route(
                "/v5/{project_id}/image/batch-scan",
                web::post().to(batch_scan),
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
            handle,
        })
    }

    pub fn received(&self) -> Vec<ReceivedScan> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

type State = (Credentials, Arc<Mutex<Vec<ReceivedScan>>>);

async fn batch_scan(
    request: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
) -> HttpResponse {
    let (credentials, received) = state.get_ref();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let signature_valid = verify(credentials, &request, &headers, &body);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut list) = received.lock() {
        list.push(ReceivedScan {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers,
            body: parsed,
            signature_valid,
        });
    }
    if signature_valid {
        HttpResponse::Ok().json(json!({}))
    } else {
        HttpResponse::Unauthorized()
            .json(json!({"error_code": "APIGW.0301", "error_msg": "Incorrect IAM authentication information"}))
    }
}

/// Re-signs the request as received, using exactly the headers it claims to sign.
fn verify(
    credentials: &Credentials,
    request: &HttpRequest,
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
    let query: Vec<(String, String)> =
        web::Query::<Vec<(String, String)>>::from_query(request.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    let expected = authorization(
        &credentials.ak,
        &credentials.sk,
        &SignableRequest {
            method: request.method().as_str(),
            path: request.path(),
            query: &query,
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
