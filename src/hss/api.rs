//! Which HSS API carries the batches. `batch-scan` is the long-standing one,
//! which HSS now marks deprecated; `scan-tasks` (`CreateManualImageScanTask`)
//! is its successor and also takes digests and a scan scope.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `hss.api`: the API every batch is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HssApi {
    /// `POST /v5/{project_id}/image/batch-scan`.
    #[default]
    BatchScan,
    /// `POST /v5/{project_id}/image/image-scan/tasks?global_image_type=registry`.
    ScanTasks,
}

/// The query parameter that makes a scan task name registry images (not
/// images local to a host); the SDK's default too, but sent explicitly.
pub const GLOBAL_IMAGE_TYPE_QUERY: (&str, &str) = ("global_image_type", "registry");

impl HssApi {
    /// The name in config, logs, metrics labels and history.
    pub fn as_str(self) -> &'static str {
        match self {
            HssApi::BatchScan => "batch-scan",
            HssApi::ScanTasks => "scan-tasks",
        }
    }

    /// The path below `{endpoint}/v5/{project_id}/`.
    pub(crate) fn path(self) -> &'static str {
        match self {
            HssApi::BatchScan => "image/batch-scan",
            HssApi::ScanTasks => "image/image-scan/tasks",
        }
    }

    /// Query parameters every call of this API carries (before the optional
    /// `enterprise_project_id`).
    pub(crate) fn fixed_query(self) -> &'static [(&'static str, &'static str)] {
        match self {
            HssApi::BatchScan => &[],
            HssApi::ScanTasks => &[GLOBAL_IMAGE_TYPE_QUERY],
        }
    }
}

impl fmt::Display for HssApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HssApi {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "batch-scan" => Ok(HssApi::BatchScan),
            "scan-tasks" => Ok(HssApi::ScanTasks),
            other => Err(format!(
                "\"{other}\" is not an HSS API; use batch-scan or scan-tasks"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for api in [HssApi::BatchScan, HssApi::ScanTasks] {
            assert_eq!(api.as_str().parse::<HssApi>(), Ok(api));
        }
        assert_eq!(HssApi::default(), HssApi::BatchScan);
        let error = "scan_tasks".parse::<HssApi>().unwrap_err();
        assert!(error.contains("batch-scan or scan-tasks"), "{error}");
    }

    #[test]
    fn scan_tasks_always_names_registry_images() {
        assert_eq!(
            HssApi::ScanTasks.fixed_query(),
            &[("global_image_type", "registry")]
        );
        assert!(HssApi::BatchScan.fixed_query().is_empty());
    }
}
