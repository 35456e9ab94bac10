//! The production log line: one JSON object per event, written straight into
//! the subscriber's line buffer.
//!
//! The shape is that of `tracing_subscriber`'s JSON format with
//! `flatten_event(true)` and `with_current_span(false)`:
//! `{"timestamp":…,"level":…,<the event's fields, message first>,"target":…}`.
//! Why our own: that format renders the timestamp into a fresh `String` and
//! every field through serde's map machinery on each event, and the webhook
//! line is written once per request. The bridge opens no spans, so the span
//! list that format appends inside a span is not written.

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// [`FormatEvent`] for JSON lines; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Events forwarded from the `log` crate (actix, rustls) carry their
        // real target and level in fields; show those, as the stock format does.
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        writer.write_str("{\"timestamp\":\"")?;
        SystemTime.format_time(&mut writer)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(metadata.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = JsonFields {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        write_json_str(&mut writer, metadata.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`, remembering the first failure.
struct JsonFields<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = write_entry(self.writer, field.name(), value);
        }
    }
}

fn write_entry(
    writer: &mut Writer<'_>,
    name: &str,
    value: impl FnOnce(&mut Writer<'_>) -> fmt::Result,
) -> fmt::Result {
    writer.write_char(',')?;
    write_json_str(writer, name)?;
    writer.write_char(':')?;
    value(writer)
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |writer| write_json_str(writer, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |writer| {
            writer.write_char('"')?;
            write!(Escaping(writer), "{value:?}")?;
            writer.write_char('"')
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |writer| write!(writer, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |writer| write!(writer, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |writer| write!(writer, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities; serde_json writes them as null.
        if value.is_finite() {
            self.entry(field, |writer| write!(writer, "{value:?}"));
        } else {
            self.entry(field, |writer| writer.write_str("null"));
        }
    }
}

fn write_json_str(writer: &mut Writer<'_>, text: &str) -> fmt::Result {
    writer.write_char('"')?;
    Escaping(writer).write_str(text)?;
    writer.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string, as serde_json
/// does: quote, backslash and control characters; the rest passes as is.
struct Escaping<'a, 'w>(&'a mut Writer<'w>);

impl Write for Escaping<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut clean_from = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[clean_from..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            clean_from = at + 1;
        }
        self.0.write_str(&text[clean_from..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("captured").extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().expect("captured").clone())
                .expect("UTF-8")
                .lines()
                .map(str::to_string)
                .collect()
        }
    }

    /// Drops the timestamp, which differs between two formatters by a few µs.
    fn without_timestamp(line: &str) -> (String, String) {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let timestamp = value["timestamp"].as_str().expect("timestamp").to_string();
        let rest = line.replacen(&timestamp, "T", 1);
        (timestamp, rest)
    }

    #[test]
    fn lines_match_the_stock_json_format_byte_for_byte_but_the_timestamp() {
        let ours = Captured::default();
        let stock = Captured::default();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(JsonLines)
                    .with_writer(ours.clone()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(stock.clone()),
            );
        tracing::subscriber::with_default(subscriber, || {
            let error = io::Error::other("disk \"full\"\n\tat\u{1b}[31m");
            tracing::info!(
                request_id = "it-1",
                source = "swr-ee",
                accepted = 2_u64,
                duplicates = 0_i64,
                negative = -3_i64,
                ok = true,
                ratio = 0.25_f64,
                whole = 2.0_f64,
                nan = f64::NAN,
                unicode = "naïve ☃ \u{7f}",
                "webhook"
            );
            tracing::warn!(error = %error, debug = ?Some("x"), "a \"quoted\" message {}", 7);
            tracing::error!(target: "custom::target", "no fields");
        });
        let (ours, stock) = (ours.lines(), stock.lines());
        assert_eq!(ours.len(), 3);
        assert_eq!(ours.len(), stock.len());
        for (ours, stock) in ours.iter().zip(&stock) {
            let (our_time, our_rest) = without_timestamp(ours);
            let (stock_time, stock_rest) = without_timestamp(stock);
            assert_eq!(our_rest, stock_rest);
            assert_eq!(
                our_time.len(),
                stock_time.len(),
                "{our_time} vs {stock_time}"
            );
        }
    }
}
