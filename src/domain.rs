//! The vocabulary shared by every stage: what an image is, which HSS request it
//! belongs to, and what the intake hands to the store.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch: how the store, the batcher and the
/// clock speak of instants (replicas compare them).
pub type Millis = i64;

/// A span of milliseconds known to be positive and to fit [`Millis`]: batch
/// windows and leases, typed once when settings load so that nothing
/// downstream clamps or casts them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveMillis(Millis);

impl PositiveMillis {
    /// `None` for 0 and for spans beyond [`Millis::MAX`].
    pub fn new(millis: u64) -> Option<Self> {
        Millis::try_from(millis)
            .ok()
            .filter(|millis| *millis > 0)
            .map(Self)
    }

    pub fn get(self) -> Millis {
        self.0
    }

    pub fn as_duration(self) -> Duration {
        Duration::from_millis(self.0.unsigned_abs())
    }
}

/// HSS `image_type`: which registry flavour the images live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageType {
    /// SWR private images.
    PrivateImage,
    /// SWR shared images.
    SharedImage,
    /// SWR Enterprise Edition instance images; items carry `instance_id`/`instance_url`.
    InstanceImage,
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::PrivateImage => "private_image",
            ImageType::SharedImage => "shared_image",
            ImageType::InstanceImage => "instance_image",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "private_image" => Some(ImageType::PrivateImage),
            "shared_image" => Some(ImageType::SharedImage),
            "instance_image" => Some(ImageType::InstanceImage),
            _ => None,
        }
    }
}

impl fmt::Display for ImageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tagged image: `namespace/name:tag`. The name may itself contain `/`
/// (SWR EE repositories such as `team-a/payments/api`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageRef {
    pub namespace: String,
    pub name: String,
    pub tag: String,
}

impl ImageRef {
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        tag: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            tag: tag.into(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.tag)
    }
}

/// Images of one partition travel together in one HSS request: HSS takes one
/// `image_type` per call, and instance and enterprise project are request-wide.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Partition {
    pub image_type: ImageType,
    pub instance_id: Option<String>,
    pub enterprise_project_id: Option<String>,
}

impl Partition {
    /// A stable, unambiguous key for storage and logs. `|` cannot appear in
    /// instance or enterprise project ids, which are UUID-like.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.image_type,
            self.instance_id.as_deref().unwrap_or(""),
            self.enterprise_project_id.as_deref().unwrap_or("")
        )
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// One image to scan, as intake hands it to the store: the image, the request
/// it must travel in, and the registry address HSS should pull it from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScanTarget {
    pub partition: Partition,
    pub image: ImageRef,
    /// `instance_url` for `instance_image`; ignored for the other types.
    pub instance_url: Option<String>,
    /// The manifest digest the push named (or SWR resolved), when known.
    pub digest: Option<String>,
}

/// One image inside a batch: what the store hands the batcher and the batcher
/// hands HSS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchImage {
    pub image: ImageRef,
    pub instance_url: Option<String>,
    /// The manifest digest, when the push (or its resolution) named one;
    /// scan-tasks sends it as `image_digest`.
    pub digest: Option<String>,
}
