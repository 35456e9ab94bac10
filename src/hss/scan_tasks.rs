//! The body of HSS `CreateManualImageScanTask`
//! (`POST /v5/{project_id}/image/image-scan/tasks?global_image_type=registry`),
//! batch-scan's successor, and `hss.scan_scope`, the risk classes it scans for.
//!
//! Field names and types follow the official SDK model
//! (`CreateManualImageScanTaskReqInfo`, `…ReqInfoImageInfo`): `scan_scope` and
//! `rate_limit` are int32, `registry_type` one of the SDK's registry names.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::image_info::{ImageInfo, ScanApiBody, image_infos};
use crate::domain::{BatchImage, Partition};

/// One risk class of `hss.scan_scope`, as HSS encodes it in `scan_scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RiskClass {
    All,
    Vulnerability,
    Baseline,
    Malware,
    Sensitive,
    Compliance,
}

impl RiskClass {
    pub const NAMES: &'static str = "all, vulnerability, baseline, malware, sensitive, compliance";

    /// The class's bits in `scan_scope` (SDK: 0x7fffffff all, 0x000f0000
    /// vulnerabilities, 0x0000f000 baseline, 0x00000f00 malicious files,
    /// 0x000000f0 sensitive information, 0x0000000f software compliance).
    pub fn bits(self) -> i32 {
        match self {
            RiskClass::All => 0x7fff_ffff,
            RiskClass::Vulnerability => 0x000f_0000,
            RiskClass::Baseline => 0x0000_f000,
            RiskClass::Malware => 0x0000_0f00,
            RiskClass::Sensitive => 0x0000_00f0,
            RiskClass::Compliance => 0x0000_000f,
        }
    }
}

/// `hss.scan_scope`: a non-empty set of risk classes. Each class HSS scans
/// for costs scan time (and quota) per image, so narrowing it is the knob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<RiskClass>", into = "Vec<RiskClass>")]
pub struct ScanScope {
    /// Sorted, without repeats.
    classes: Vec<RiskClass>,
}

impl ScanScope {
    /// Every class: what HSS scans for when asked for everything.
    pub fn all() -> Self {
        Self {
            classes: vec![RiskClass::All],
        }
    }

    /// The `scan_scope` value: the OR of the classes' bits.
    pub fn bits(&self) -> i32 {
        self.classes
            .iter()
            .fold(0, |bits, class| bits | class.bits())
    }

    pub fn classes(&self) -> &[RiskClass] {
        &self.classes
    }
}

impl Default for ScanScope {
    fn default() -> Self {
        Self::all()
    }
}

impl TryFrom<Vec<RiskClass>> for ScanScope {
    type Error = String;

    fn try_from(mut classes: Vec<RiskClass>) -> Result<Self, Self::Error> {
        if classes.is_empty() {
            return Err(format!(
                "must name at least one risk class ({}); an empty scope would scan for nothing",
                RiskClass::NAMES
            ));
        }
        classes.sort_unstable();
        classes.dedup();
        Ok(Self { classes })
    }
}

impl From<ScanScope> for Vec<RiskClass> {
    fn from(scope: ScanScope) -> Self {
        scope.classes
    }
}

impl fmt::Display for ScanScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.bits())
    }
}

#[derive(Serialize)]
struct ScanTasksBody<'a> {
    scan_scope: i32,
    /// Throttles third-party registries only; 0 means "no limit".
    rate_limit: i32,
    /// `false`: scan exactly the images of `image_info`.
    is_all: bool,
    image_info: Vec<ImageInfo<'a>>,
}

/// The JSON body of one scan-tasks request for `images` of `partition`.
/// `image_digest` is sent whenever the image's digest is known; instance
/// fields only for `instance_image`.
pub fn scan_tasks_body(
    partition: &Partition,
    images: &[BatchImage],
    scope: &ScanScope,
) -> Result<Vec<u8>, serde_json::Error> {
    let body = ScanTasksBody {
        scan_scope: scope.bits(),
        rate_limit: 0,
        is_all: false,
        image_info: image_infos(partition, images, ScanApiBody::ScanTasks),
    };
    serde_json::to_vec(&body)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::ImageType;
    use crate::hss::image_info::fixtures::{self, INSTANCE_ID, partition};

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn image(tag: &str, digest: Option<&str>) -> BatchImage {
        BatchImage {
            digest: digest.map(str::to_string),
            ..fixtures::image(
                "team-a",
                "svc/api",
                tag,
                Some("ee-demo.swr.cn-north-4.myhuaweicloud.com"),
            )
        }
    }

    fn scope(classes: &[RiskClass]) -> ScanScope {
        ScanScope::try_from(classes.to_vec()).unwrap()
    }

    fn body(image_type: ImageType, images: &[BatchImage], scope: &ScanScope) -> Value {
        serde_json::from_slice(&scan_tasks_body(&partition(image_type), images, scope).unwrap())
            .unwrap()
    }

    #[test]
    fn scope_is_the_or_of_its_classes() {
        use RiskClass::*;
        for (classes, bits) in [
            (vec![All], 0x7fff_ffff),
            (vec![Vulnerability], 0x000f_0000),
            (vec![Baseline], 0x0000_f000),
            (vec![Malware], 0x0000_0f00),
            (vec![Sensitive], 0x0000_00f0),
            (vec![Compliance], 0x0000_000f),
            (vec![Vulnerability, Malware], 0x000f_0f00),
            (vec![Compliance, Vulnerability, Vulnerability], 0x000f_000f),
            (
                vec![Vulnerability, Baseline, Malware, Sensitive, Compliance],
                0x000f_ffff,
            ),
            (vec![Malware, All], 0x7fff_ffff),
        ] {
            assert_eq!(scope(&classes).bits(), bits, "{classes:?}");
            assert_eq!(
                body(
                    ImageType::PrivateImage,
                    &[image("1", None)],
                    &scope(&classes)
                )["scan_scope"],
                json!(bits),
                "{classes:?}"
            );
        }
        assert_eq!(ScanScope::default().bits(), 0x7fff_ffff);
    }

    #[test]
    fn an_empty_scope_is_refused_with_the_names_to_use() {
        let error = ScanScope::try_from(Vec::new()).unwrap_err();
        assert!(error.contains("vulnerability, baseline"), "{error}");
    }

    #[test]
    fn scope_reads_names_and_refuses_unknown_ones() {
        let scope: ScanScope = serde_json::from_str(r#"["malware","vulnerability"]"#).unwrap();
        assert_eq!(scope.bits(), 0x000f_0f00);
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            r#"["vulnerability","malware"]"#
        );
        assert!(serde_json::from_str::<ScanScope>(r#"["viruses"]"#).is_err());
        assert!(serde_json::from_str::<ScanScope>("[]").is_err());
    }

    #[test]
    fn each_image_type_names_its_registry_type_and_only_instances_carry_instance_fields() {
        for (image_type, registry) in [
            (ImageType::PrivateImage, "SwrPrivate"),
            (ImageType::SharedImage, "SwrShared"),
            (ImageType::InstanceImage, "SwrEnterprise"),
        ] {
            let body = body(image_type, &[image("1.2.3", None)], &ScanScope::all());
            let mut expected = json!({
                "namespace": "team-a",
                "image_name": "svc/api",
                "image_version": "1.2.3",
                "registry_type": registry,
            });
            if image_type == ImageType::InstanceImage {
                expected["instance_id"] = json!(INSTANCE_ID);
                expected["instance_url"] = json!("ee-demo.swr.cn-north-4.myhuaweicloud.com");
            }
            assert_eq!(body["image_info"], json!([expected]), "{image_type}");
            assert_eq!(body["rate_limit"], json!(0));
            assert_eq!(body["is_all"], json!(false));
            assert_eq!(body.as_object().unwrap().len(), 4, "{body}");
        }
    }

    #[test]
    fn the_digest_is_sent_when_known_and_left_out_when_not() {
        let body = body(
            ImageType::InstanceImage,
            &[image("known", Some(DIGEST)), image("unknown", None)],
            &ScanScope::all(),
        );
        let items = body["image_info"].as_array().unwrap();
        assert_eq!(items[0]["image_version"], "known");
        assert_eq!(items[0]["image_digest"], DIGEST);
        assert_eq!(items[1]["image_version"], "unknown");
        assert!(items[1].get("image_digest").is_none(), "{}", items[1]);
    }

    #[test]
    fn body_bytes_follow_the_contract_field_order() {
        let bytes = scan_tasks_body(
            &partition(ImageType::InstanceImage),
            &[image("1.2.3", Some(DIGEST))],
            &scope(&[RiskClass::Vulnerability]),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                r#"{{"scan_scope":983040,"rate_limit":0,"is_all":false,"image_info":[{{"namespace":"team-a","image_name":"svc/api","image_version":"1.2.3","registry_type":"SwrEnterprise","image_digest":"{DIGEST}","instance_id":"{INSTANCE_ID}","instance_url":"ee-demo.swr.cn-north-4.myhuaweicloud.com"}}]}}"#
            )
        );
    }
}
