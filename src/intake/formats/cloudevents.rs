//! Harbor's CloudEvents payload (structured mode): `harbor.artifact.pushed`
//! events carry Harbor's `event_data` shape in `data`, and `id` names the
//! delivery.

use serde::Deserialize;

use super::harbor::{self, EventData};
use super::json::{self, Field, JsonObject, Problem, ROOT, Text};
use super::{IgnoreReason, Ignored, ParsedWebhook, PayloadError};

const FORMAT: &str = "cloudevents";
/// The only Harbor CloudEvents type that pushes an image.
const PUSH_EVENT: &str = "harbor.artifact.pushed";

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

/// Parses a Harbor CloudEvent; its `id` becomes the delivery id.
pub fn parse(body: &[u8]) -> Result<ParsedWebhook, PayloadError> {
    let envelope: Envelope<'_> = json::decode(body, FORMAT)?;
    read(&envelope).map_err(|problem| problem.into_error(FORMAT))
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
