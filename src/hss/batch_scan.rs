//! The body of HSS `BatchScanSwrImage` (`POST /v5/{project_id}/image/batch-scan`).

use serde::Serialize;

use crate::domain::BatchImage;
use crate::domain::{ImageType, Partition};

#[derive(Serialize)]
struct BatchScanBody<'a> {
    image_type: &'a str,
    image_info_list: Vec<ImageInfo<'a>>,
}

#[derive(Serialize)]
struct ImageInfo<'a> {
    namespace: &'a str,
    image_name: &'a str,
    image_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance_url: Option<&'a str>,
}

/// The JSON body of one batch-scan request, fields in the order the SDK
/// writes them. Instance fields appear only for `instance_image`; batch-scan
/// has no field for a digest.
pub fn batch_scan_body(
    partition: &Partition,
    images: &[BatchImage],
) -> Result<Vec<u8>, serde_json::Error> {
    let is_instance = partition.image_type == ImageType::InstanceImage;
    let body = BatchScanBody {
        image_type: partition.image_type.as_str(),
        image_info_list: images
            .iter()
            .map(|item| ImageInfo {
                namespace: &item.image.namespace,
                image_name: &item.image.name,
                image_version: &item.image.tag,
                instance_id: partition.instance_id.as_deref().filter(|_| is_instance),
                instance_url: item.instance_url.as_deref().filter(|_| is_instance),
            })
            .collect(),
    };
    serde_json::to_vec(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ImageRef;

    fn partition(image_type: ImageType) -> Partition {
        Partition {
            image_type,
            instance_id: Some("4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6".into()),
            enterprise_project_id: None,
        }
    }

    fn image(namespace: &str, name: &str, tag: &str, url: Option<&str>) -> BatchImage {
        BatchImage {
            image: ImageRef::new(namespace, name, tag),
            instance_url: url.map(str::to_string),
            digest: Some(format!("sha256:{}", "a".repeat(64))),
        }
    }

    #[test]
    fn body_matches_the_sdk_bytes_of_the_vectors() {
        let private = batch_scan_body(
            &partition(ImageType::PrivateImage),
            &[image("test", "openjdk", "v8.8", Some("ignored.example"))],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(private).unwrap(),
            r#"{"image_type":"private_image","image_info_list":[{"namespace":"test","image_name":"openjdk","image_version":"v8.8"}]}"#
        );
        let instance = batch_scan_body(
            &partition(ImageType::InstanceImage),
            &[image(
                "team-a",
                "svc/api",
                "1.2.3",
                Some("ee-demo.swr.cn-north-4.myhuaweicloud.com"),
            )],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(instance).unwrap(),
            r#"{"image_type":"instance_image","image_info_list":[{"namespace":"team-a","image_name":"svc/api","image_version":"1.2.3","instance_id":"4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6","instance_url":"ee-demo.swr.cn-north-4.myhuaweicloud.com"}]}"#
        );
    }
}
