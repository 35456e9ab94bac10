//! A small reader for the Prometheus text exposition format, so tests can
//! assert exact sample values by name and label set rather than grep text.

// A shared fixture: not every test module uses every accessor.
#![allow(dead_code)]

use std::collections::BTreeMap;

/// Label name → value, ordered so two label sets compare equal regardless of
/// the order the exposition wrote them in.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// Parses a whole exposition; fails on the first line that is neither a
    /// comment nor `name[{labels}] value [timestamp]`.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut samples = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let sample =
                parse_line(line).map_err(|e| format!("line {}: {e}: {line}", number + 1))?;
            samples.push(sample);
        }
        Ok(Scrape { samples })
    }

    /// The value of the sample with exactly this name and label set.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted = labels_of(labels);
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// Like [`Scrape::value`], panicking with the scrape's series of that name
    /// when the sample is missing.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name}{labels:?}; series of that name: {:?}",
                self.series(name)
            )
        })
    }

    /// Every series of a metric name, by label set.
    pub fn series(&self, name: &str) -> BTreeMap<Labels, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| (s.labels.clone(), s.value))
            .collect()
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.samples.iter().map(|s| s.name.as_str()).collect();
        names.dedup();
        names
    }
}

/// A label set from `(name, value)` pairs.
pub fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Labels::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, remainder) = parse_labels(after_brace)?;
        labels = parsed;
        rest = remainder;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        number => number
            .parse::<f64>()
            .map_err(|e| format!("bad value {number:?}: {e}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|e| format!("bad timestamp {timestamp:?}: {e}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses `k="v",k2="v2"}` (after the opening brace); returns the labels and
/// what follows the closing brace.
fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Labels::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("label without '='")?;
        let key = text[..eq].trim();
        if key.is_empty() {
            return Err("empty label name".into());
        }
        let quoted = text[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((index, '"')) => break index,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label {key} twice"));
        }
        text = &quoted[end + 1..];
    }
}

#[cfg(test)]
mod self_check {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_special_values() {
        let scrape = Scrape::parse(
            "# HELP x_total help\n# TYPE x_total counter\n\
             x_total{a=\"1\",b=\"q\\\"uo\\\\te\\n\"} 3\n\
             y 2.5 1700000000000\n\
             h_bucket{le=\"+Inf\"} 7\n\
             z{} +Inf\n",
        )
        .unwrap();
        assert_eq!(
            scrape.value("x_total", &[("b", "q\"uo\\te\n"), ("a", "1")]),
            Some(3.0)
        );
        assert_eq!(scrape.value("x_total", &[("a", "1")]), None);
        assert_eq!(scrape.value("y", &[]), Some(2.5));
        assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), Some(7.0));
        assert_eq!(scrape.value("z", &[]), Some(f64::INFINITY));
        assert_eq!(scrape.names(), ["x_total", "y", "h_bucket", "z"]);
    }

    #[test]
    fn refuses_what_is_not_the_format() {
        for bad in [
            "x",
            "x{a=1} 2",
            "x{a=\"1\" 2",
            "x one",
            "x 1 2 3",
            "{a=\"b\"} 1",
        ] {
            assert!(Scrape::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
