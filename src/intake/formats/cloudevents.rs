//! Harbor's CloudEvents payload: `harbor.artifact.pushed` events carry
//! Harbor's `event_data` shape as their data, and `id` names the delivery.
//!
//! Both HTTP content modes of the CloudEvents HTTP binding are read:
//! structured (the whole event is the JSON body, `application/cloudevents+json`)
//! and binary (attributes in `ce-*` headers, the body is the data alone).

use actix_web::http::header::{CONTENT_TYPE, HeaderMap};
use serde::Deserialize;

use super::harbor::{self, EventData};
use super::json::{self, Field, JsonObject, Problem, ROOT, Text};
use super::{IgnoreReason, Ignored, ParsedWebhook, PayloadError};

const FORMAT: &str = "cloudevents";
/// The only Harbor CloudEvents type that pushes an image.
const PUSH_EVENT: &str = "harbor.artifact.pushed";
/// The CloudEvents version this reader understands.
const SPEC_VERSION: &str = "1.0";
/// Binary mode's attribute headers; `ce-specversion` also marks the mode.
const SPEC_VERSION_HEADER: &str = "ce-specversion";
const ID_HEADER: &str = "ce-id";
const SOURCE_HEADER: &str = "ce-source";
const TYPE_HEADER: &str = "ce-type";
/// An attribute value longer than this is refused rather than quoted or stored.
const ATTRIBUTE_LIMIT: usize = 1024;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    id: Text<'a>,
    #[serde(rename = "type", default, borrow)]
    event_type: Text<'a>,
    #[serde(default, borrow)]
    data: Field<EventData<'a>>,
}

impl JsonObject for Envelope<'_> {}

/// Reads a Harbor CloudEvent in the content mode it arrived in: binary when
/// `ce-specversion` is present and the content type is not a CloudEvents
/// one (the binding's rule), structured otherwise.
pub fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    if is_binary_mode(headers) {
        parse_binary(headers, body)
    } else {
        parse(body)
    }
}

/// Parses a Harbor CloudEvent in structured mode; its `id` becomes the delivery id.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let envelope: Envelope<'_> = json::decode(body, FORMAT)?;
    read(&envelope).map_err(|problem| problem.into_error(FORMAT))
}

/// Parses a Harbor CloudEvent in binary mode: `ce-id`, `ce-type`, `ce-source`
/// and `ce-specversion` headers, the event's data as the body.
pub fn parse_binary(headers: &HeaderMap, body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let spec_version = attribute(headers, SPEC_VERSION_HEADER)?;
    if spec_version != SPEC_VERSION {
        return Err(header_error(
            SPEC_VERSION_HEADER,
            format!(
                "{} is not a CloudEvents version this bridge reads; send {SPEC_VERSION}",
                json::quote(&spec_version)
            ),
        ));
    }
    let id = attribute(headers, ID_HEADER)?;
    attribute(headers, SOURCE_HEADER)?;
    let event_type = attribute(headers, TYPE_HEADER)?;
    let mut parsed = ParsedWebhook {
        delivery_id: Some(id),
        ..ParsedWebhook::default()
    };
    if event_type != PUSH_EVENT {
        // Not a push: its data is none of the bridge's business, whatever its shape.
        parsed.ignored.push(Ignored {
            reason: IgnoreReason::NotAPush,
            subject: event_type,
        });
        return Ok(parsed);
    }
    let data: EventData<'_> = json::decode(body, FORMAT)?;
    harbor::collect_push(&data, &ROOT, &mut parsed)
        .map_err(|problem| problem.into_error(FORMAT))?;
    Ok(parsed)
}

fn read(envelope: &Envelope<'_>) -> Result<ParsedWebhook, Problem> {
    let id_path = ROOT.key("id");
    let id = envelope.id.required(&id_path)?;
    if id.is_empty() {
        return Err(Problem::new(
            &id_path,
            "must not be empty (CloudEvents requires an id)",
        ));
    }
    let event_type = envelope.event_type.required(&ROOT.key("type"))?;
    let mut parsed = ParsedWebhook {
        delivery_id: Some(id.to_string()),
        ..ParsedWebhook::default()
    };
    if event_type != PUSH_EVENT {
        parsed.ignored.push(Ignored {
            reason: IgnoreReason::NotAPush,
            subject: event_type.to_string(),
        });
        return Ok(parsed);
    }
    let data_path = ROOT.key("data");
    harbor::collect_push(envelope.data.required(&data_path)?, &data_path, &mut parsed)?;
    Ok(parsed)
}

fn is_binary_mode(headers: &HeaderMap) -> bool {
    let structured = headers.get(CONTENT_TYPE).is_some_and(|value| {
        value
            .as_bytes()
            .get(..b"application/cloudevents".len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"application/cloudevents"))
    });
    !structured && headers.contains_key(SPEC_VERSION_HEADER)
}

/// One binary-mode attribute: exactly one header, non-empty, percent-decoded
/// as the HTTP binding encodes values, and valid UTF-8.
fn attribute(headers: &HeaderMap, name: &'static str) -> Result<String, PayloadError> {
    let mut values = headers.get_all(name);
    let value = match (values.next(), values.next()) {
        (Some(value), None) => value,
        (None, _) => {
            return Err(header_error(
                name,
                "missing; a binary-mode CloudEvent carries ce-id, ce-source, ce-specversion and ce-type headers",
            ));
        }
        (Some(_), Some(_)) => return Err(header_error(name, "sent more than once")),
    };
    if value.len() > ATTRIBUTE_LIMIT {
        return Err(header_error(
            name,
            format!("longer than {ATTRIBUTE_LIMIT} bytes"),
        ));
    }
    let decoded = percent_decode(value.as_bytes())
        .ok_or_else(|| header_error(name, "is not percent-encoded UTF-8"))?;
    if decoded.is_empty() {
        return Err(header_error(name, "must not be empty"));
    }
    Ok(decoded)
}

fn percent_decode(raw: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            let mut decoded = [0u8; 1];
            hex::decode_to_slice(hex, &mut decoded).ok()?;
            out.push(decoded[0]);
            rest = tail.get(2..)?;
        } else {
            out.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(out).ok()
}

fn header_error(header: &'static str, reason: impl Into<String>) -> PayloadError {
    PayloadError::Shape {
        format: FORMAT,
        detail: format!("header `{header}`: {}", reason.into()),
    }
}
