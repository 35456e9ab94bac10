//! One image as the two HSS scan APIs name it in their bodies.

use serde::Serialize;

use crate::domain::{BatchImage, ImageType, Partition};

/// Which API's body an [`ImageInfo`] goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanApiBody {
    /// `image_info_list` of batch-scan: no registry type, no digest.
    BatchScan,
    /// `image_info` of scan-tasks: the registry type, and the digest when known.
    ScanTasks,
}

/// An image, fields in the order the SDK writes them. Instance fields appear
/// only for `instance_image`.
#[derive(Serialize)]
pub(super) struct ImageInfo<'a> {
    namespace: &'a str,
    image_name: &'a str,
    image_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_url: Option<&'a str>,
}

/// The images of one `partition` as `api`'s body lists them.
pub(super) fn image_infos<'a>(
    partition: &'a Partition,
    images: &'a [BatchImage],
    api: ScanApiBody,
) -> Vec<ImageInfo<'a>> {
    let is_instance = partition.image_type == ImageType::InstanceImage;
    let is_scan_tasks = api == ScanApiBody::ScanTasks;
    let registry_type = registry_type(partition.image_type);
    images
        .iter()
        .map(|item| ImageInfo {
            namespace: &item.image.namespace,
            image_name: &item.image.name,
            image_version: &item.image.tag,
            registry_type: Some(registry_type).filter(|_| is_scan_tasks),
            image_digest: item.digest.as_deref().filter(|_| is_scan_tasks),
            instance_id: partition.instance_id.as_deref().filter(|_| is_instance),
            instance_url: item.instance_url.as_deref().filter(|_| is_instance),
        })
        .collect()
}

/// The SDK's `registry_type` for the images of one `image_type`.
fn registry_type(image_type: ImageType) -> &'static str {
    match image_type {
        ImageType::PrivateImage => "SwrPrivate",
        ImageType::SharedImage => "SwrShared",
        ImageType::InstanceImage => "SwrEnterprise",
    }
}

/// The partition and images the HSS unit tests send.
#[cfg(test)]
pub(super) mod fixtures {
    use crate::domain::{BatchImage, ImageRef, ImageType, Partition};

    pub const INSTANCE_ID: &str = "4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6";

    /// A partition of `image_type` whose instance id is set even for other
    /// types: bodies must leave it out there.
    pub fn partition(image_type: ImageType) -> Partition {
        Partition {
            image_type,
            instance_id: Some(INSTANCE_ID.into()),
            enterprise_project_id: None,
        }
    }

    /// An image without a known digest.
    pub fn image(namespace: &str, name: &str, tag: &str, url: Option<&str>) -> BatchImage {
        BatchImage {
            image: ImageRef::new(namespace, name, tag),
            instance_url: url.map(str::to_string),
            digest: None,
        }
    }

    /// The batch of shared signing vector 1: one private image (its
    /// instance URL must not reach the body).
    pub fn vector_1() -> (Partition, Vec<BatchImage>) {
        let image = image("test", "openjdk", "v8.8", Some("ignored.example"));
        (partition(ImageType::PrivateImage), vec![image])
    }

    /// The batch of shared signing vector 3: one instance image.
    pub fn vector_3() -> (Partition, Vec<BatchImage>) {
        let url = Some("ee-demo.swr.cn-north-4.myhuaweicloud.com");
        let image = image("team-a", "svc/api", "1.2.3", url);
        (partition(ImageType::InstanceImage), vec![image])
    }
}
