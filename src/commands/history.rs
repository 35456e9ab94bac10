//! `history`: asks a running bridge's `/admin/history` for one image and
//! prints its events, so "was my image scanned?" needs no curl.
//!
//! The admin token is taken only as `env:NAME` or `file:PATH`, never as a
//! literal argument: command lines are visible to every user through `ps`
//! and `/proc`, and land in shell histories.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{Secret, SecretError};
use crate::store::{HistoryEvent, HistorySubject};

/// The default reference, as the example configuration names the token.
pub const DEFAULT_TOKEN_REF: &str = "env:BRIDGE_ADMIN_TOKEN";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum HistoryCommandError {
    #[error(
        "--token must be env:NAME or file:PATH; a literal token on the command line is visible to other users (ps, shell history)"
    )]
    LiteralToken,
    #[error("admin token: {0}")]
    Token(#[from] SecretError),
    #[error("{0}")]
    Image(#[from] crate::store::history::SubjectError),
    #[error("--url {url:?} is not an http(s) URL: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach the bridge at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the bridge answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the bridge's answer is not a history: {0}")]
    Answer(String),
}

impl HistoryCommandError {
    /// 2 for what the caller must fix in the command line, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            HistoryCommandError::LiteralToken
            | HistoryCommandError::Token(_)
            | HistoryCommandError::Image(_)
            | HistoryCommandError::Url { .. } => 2,
            _ => 1,
        }
    }
}

/// Follows `env:`/`file:` references only.
pub fn admin_token(reference: &str) -> Result<Secret, HistoryCommandError> {
    if !(reference.starts_with("env:") || reference.starts_with("file:")) {
        return Err(HistoryCommandError::LiteralToken);
    }
    Ok(Secret::resolve(reference)?)
}

/// The answer of `GET /admin/history`.
#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    pub image: String,
    pub events: Vec<HistoryEvent>,
}

/// The whole command: the text to print (JSON when `json`).
pub async fn run(
    image: &str,
    base_url: &str,
    token_ref: &str,
    json: bool,
) -> Result<String, HistoryCommandError> {
    let token = admin_token(token_ref)?;
    let history = fetch(base_url, &token, image).await?;
    if json {
        serde_json::to_string_pretty(&history)
            .map(|text| text + "\n")
            .map_err(|error| HistoryCommandError::Answer(error.to_string()))
    } else {
        Ok(render(&history))
    }
}

/// Asks the bridge at `base_url` for `image`'s history.
pub async fn fetch(
    base_url: &str,
    token: &Secret,
    image: &str,
) -> Result<History, HistoryCommandError> {
    let subject: HistorySubject = image.parse()?;
    let mut url = reqwest::Url::parse(base_url)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| HistoryCommandError::Url {
            url: base_url.to_string(),
            reason: "expected e.g. http://127.0.0.1:8080".into(),
        })?;
    url.set_path("/admin/history");
    url.query_pairs_mut()
        .clear()
        .append_pair("image", &subject.to_string());
    let unreachable = |error: reqwest::Error| HistoryCommandError::Unreachable {
        url: base_url.to_string(),
        reason: error.without_url().to_string(),
    };
    let response = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(unreachable)?
        .get(url)
        .bearer_auth(token.expose())
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let body = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(HistoryCommandError::Refused {
            status: status.as_u16(),
            body,
        });
    }
    serde_json::from_str(&body).map_err(|error| HistoryCommandError::Answer(error.to_string()))
}

/// One line per event, oldest first.
pub fn render(history: &History) -> String {
    let mut out = format!("{}\n", history.image);
    if history.events.is_empty() {
        out.push_str("  no events: the bridge has not heard of this image (or forgot it)\n");
        return out;
    }
    for event in &history.events {
        let _ = write!(
            out,
            "  {}  {:<11} source={}",
            format_time(event.at_ms),
            event.event.as_str(),
            if event.source.is_empty() {
                "-"
            } else {
                &event.source
            }
        );
        let details = [
            ("batch_id", event.batch_id.map(|id| id.to_string())),
            ("api", event.api.clone()),
            (
                "hss_status",
                event.hss_status.map(|status| status.to_string()),
            ),
            ("hss_request_id", event.hss_request_id.clone()),
            ("digest", event.digest.clone()),
            ("reason", event.reason.clone()),
        ];
        for (name, value) in details {
            if let Some(value) = value {
                let _ = write!(out, " {name}={value}");
            }
        }
        out.push('\n');
    }
    out
}

/// `at_ms` as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn format_time(at_ms: i64) -> String {
    let seconds = at_ms.div_euclid(1000);
    let millis = at_ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventKind;

    #[test]
    fn literal_tokens_are_refused() {
        let error = admin_token("s3cret-token").expect_err("literal");
        assert!(matches!(error, HistoryCommandError::LiteralToken));
        assert_eq!(error.exit_code(), 2);
        assert!(!error.to_string().contains("s3cret-token"));
    }

    #[test]
    fn times_print_as_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn render_names_every_detail() {
        let scanned = HistoryEvent {
            at_ms: 1_800_000_000_000,
            event: EventKind::Scanned,
            source: "swr-ee".into(),
            batch_id: Some(7),
            api: None,
            hss_status: Some(200),
            hss_request_id: Some("req-1".into()),
            reason: None,
            digest: None,
        };
        let text = render(&History {
            image: "team-a/api:1".into(),
            events: vec![scanned],
        });
        assert_eq!(
            text,
            "team-a/api:1\n  2027-01-15T08:00:00.000Z  scanned     source=swr-ee batch_id=7 hss_status=200 hss_request_id=req-1\n"
        );
        let empty = render(&History {
            image: "team-a/api:2".into(),
            events: vec![],
        });
        assert!(empty.contains("no events"), "{empty}");
    }
}
