//! The body of HSS `BatchScanSwrImage` (`POST /v5/{project_id}/image/batch-scan`).

use serde::Serialize;

use super::image_info::{ImageInfo, ScanApiBody, image_infos};
use crate::domain::{BatchImage, Partition};

#[derive(Serialize)]
struct BatchScanBody<'a> {
    image_type: &'a str,
    image_info_list: Vec<ImageInfo<'a>>,
}

/// The JSON body of one batch-scan request, fields in the order the SDK
/// writes them. Instance fields appear only for `instance_image`; batch-scan
/// has no field for a digest.
pub fn batch_scan_body(
    partition: &Partition,
    images: &[BatchImage],
) -> Result<Vec<u8>, serde_json::Error> {
    let body = BatchScanBody {
        image_type: partition.image_type.as_str(),
        image_info_list: image_infos(partition, images, ScanApiBody::BatchScan),
    };
    serde_json::to_vec(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hss::image_info::fixtures::{vector_1, vector_3};

    #[test]
    fn body_matches_the_sdk_bytes_of_the_vectors() {
        let (partition, images) = vector_1();
        let private = batch_scan_body(&partition, &images).unwrap();
        assert_eq!(
            String::from_utf8(private).unwrap(),
            r#"{"image_type":"private_image","image_info_list":[{"namespace":"test","image_name":"openjdk","image_version":"v8.8"}]}"#
        );
        let (partition, images) = vector_3();
        let instance = batch_scan_body(&partition, &images).unwrap();
        assert_eq!(
            String::from_utf8(instance).unwrap(),
            r#"{"image_type":"instance_image","image_info_list":[{"namespace":"team-a","image_name":"svc/api","image_version":"1.2.3","instance_id":"4a6b2f0e-1c1d-4e8f-9a0b-c1d2e3f4a5b6","instance_url":"ee-demo.swr.cn-north-4.myhuaweicloud.com"}]}"#
        );
    }
}
