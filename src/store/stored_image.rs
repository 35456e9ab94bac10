//! How an image is kept inside a dead letter's `images` column (a JSON array),
//! shared by both backends so a dead letter reads the same from either.

use serde::{Deserialize, Serialize};

use super::BatchImage;
use crate::domain::ImageRef;

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct StoredImage {
    namespace: String,
    name: String,
    tag: String,
    instance_url: Option<String>,
    /// Absent in dead letters written before digests were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
}

impl From<&BatchImage> for StoredImage {
    fn from(image: &BatchImage) -> Self {
        StoredImage {
            namespace: image.image.namespace.clone(),
            name: image.image.name.clone(),
            tag: image.image.tag.clone(),
            instance_url: image.instance_url.clone(),
            digest: image.digest.clone(),
        }
    }
}

impl From<StoredImage> for BatchImage {
    fn from(image: StoredImage) -> Self {
        BatchImage {
            image: ImageRef::new(image.namespace, image.name, image.tag),
            instance_url: image.instance_url,
            digest: image.digest,
        }
    }
}
