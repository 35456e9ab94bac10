//! What HSS accepts in the body (and query) of a scan request: the rules the
//! `demo` command's stand-in HSS and the tests' fake HSS both enforce, so a
//! request the bridge builds is judged the same way wherever it lands. Each
//! check returns every rule broken, as readable problems (empty: HSS would
//! take it).

use serde_json::{Map, Value};

/// Every class bit `scan_scope` may carry (`all`).
const SCAN_SCOPE_ALL: i64 = 0x7fff_ffff;

/// The `BatchScanSwrImage` body rules: a known `image_type`, a non-empty
/// `image_info_list` of named images, instance fields exactly for instance images.
pub fn check_batch_scan(body: &Value) -> Vec<String> {
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
    let known = [
        "namespace",
        "image_name",
        "image_version",
        "instance_id",
        "instance_url",
    ];
    check_image_items(
        object,
        "image_info_list",
        &known,
        &mut problems,
        |at, item, problems| {
            instance_fields(item, is_instance, at, problems);
        },
    );
    problems
}

/// The `CreateManualImageScanTask` rules: `global_image_type=registry`, a
/// scope of known class bits, `rate_limit` 0..=1000, `is_all` false with a
/// non-empty `image_info` of named SWR images, instance fields exactly for
/// `SwrEnterprise`, digests as `sha256:` hex.
pub fn check_scan_tasks(query: &[(String, String)], body: &Value) -> Vec<String> {
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
    let known = [
        "namespace",
        "image_name",
        "image_version",
        "registry_type",
        "image_digest",
        "instance_id",
        "instance_url",
    ];
    check_image_items(
        object,
        "image_info",
        &known,
        &mut problems,
        |at, item, problems| {
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
            instance_fields(item, is_instance, at, problems);
            if let Some(digest) = item.get("image_digest") {
                let valid = digest
                    .as_str()
                    .and_then(|d| d.strip_prefix("sha256:"))
                    .is_some_and(|hex| {
                        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
                    });
                if !valid {
                    problems.push(format!("{at}.image_digest must be sha256:<64 hex digits>"));
                }
            }
        },
    );
    problems
}

/// Checks the image list `key` (a non-empty array) item by item: an object
/// of `known` fields that names an image, then `check(at, item, problems)`
/// with `at` naming where the item stands.
fn check_image_items(
    object: &Map<String, Value>,
    key: &str,
    known: &[&str],
    problems: &mut Vec<String>,
    mut check: impl FnMut(&str, &Map<String, Value>, &mut Vec<String>),
) {
    let items = match object.get(key).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items.as_slice(),
        _ => {
            problems.push(format!("{key} must be a non-empty array"));
            &[]
        }
    };
    for (index, item) in items.iter().enumerate() {
        let at = format!("{key}[{index}]");
        let Some(item) = item.as_object() else {
            problems.push(format!("{at} is not an object"));
            continue;
        };
        unknown_keys(item, known, &at, problems);
        named_image(item, &at, problems);
        check(&at, item, problems);
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
    use serde_json::json;

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

    /// An image named `a/b:c` with these other fields.
    fn item(fields: Value) -> Value {
        let mut item = json!({"namespace": "a", "image_name": "b", "image_version": "c"});
        if let (Some(item), Some(fields)) = (item.as_object_mut(), fields.as_object()) {
            item.extend(fields.clone());
        }
        item
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
                tasks(item(json!({"registry_type": "Harbor"}))),
                "registry_type",
            ),
            (
                registry_query(),
                tasks(item(
                    json!({"registry_type": "SwrShared", "instance_id": "x"}),
                )),
                "only for enterprise",
            ),
            (
                registry_query(),
                tasks(item(json!({"registry_type": "SwrEnterprise"}))),
                "instance_id is required",
            ),
            (
                registry_query(),
                tasks(item(
                    json!({"registry_type": "SwrPrivate", "image_digest": "latest"}),
                )),
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
                tasks(item(json!({"registry_type": "SwrPrivate", "tag": "c"}))),
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
