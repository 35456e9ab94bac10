//! `sign`: the headers a sender adds for a source's verification scheme, so a
//! person can post a webhook with curl (`curl -H @headers.txt …`).

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use crate::config::Settings;
use crate::intake::verify::sign_headers;

pub fn print(settings: &Settings, source_name: &str, body_path: Option<&Path>) -> ExitCode {
    let Some(source) = settings.source(source_name) else {
        let known: Vec<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
        eprintln!(
            "no source named \"{source_name}\" in the configuration; configured: {}",
            known.join(", ")
        );
        return ExitCode::from(2);
    };
    let Some(verify) = source.webhook().map(|webhook| &webhook.verify) else {
        eprintln!(
            "source \"{source_name}\" is a swr-poll source: the bridge polls SWR for it, nothing posts webhooks to it"
        );
        return ExitCode::from(2);
    };
    let body = match body_path {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        None => {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .map(|_| buffer)
                .map_err(|e| format!("cannot read the body from stdin: {e}"))
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let now = chrono::Utc::now().timestamp();
    let message_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    println!("Content-Type: application/json");
    for (name, value) in sign_headers(verify, &body, now, &message_id) {
        println!("{name}: {value}");
    }
    ExitCode::SUCCESS
}
