//! SWR Enterprise Edition operations the bridge needs: `ShowInstanceArtifact`,
//! which names the tags of a manifest pushed by digest.

use serde::Deserialize;

use super::client::{SwrAnswer, SwrClient, SwrError};

/// The operation name in logs and `swr_requests_total`.
pub const SHOW_INSTANCE_ARTIFACT: &str = "show_instance_artifact";

/// The part of SDK `ShowInstanceArtifactResponse` the bridge reads. Every field
/// is optional in the SDK model, so an absent one is not an error.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstanceArtifact {
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub media_type: Option<String>,
    /// SDK `tags: []ArtifactTag`; absent or `null` when the artifact is untagged.
    #[serde(default)]
    pub tags: Option<Vec<ArtifactTag>>,
}

/// SDK `ArtifactTag`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ArtifactTag {
    #[serde(default)]
    pub name: Option<String>,
}

impl InstanceArtifact {
    /// The names of its tags, in SWR's order, without empty ones.
    pub fn tag_names(&self) -> impl Iterator<Item = &str> {
        self.tags
            .iter()
            .flatten()
            .filter_map(|tag| tag.name.as_deref())
            .filter(|name| !name.is_empty())
    }
}

/// Which artifact to show: an SWR EE instance's repository and a digest.
#[derive(Debug, Clone, Copy)]
pub struct ArtifactAddress<'a> {
    pub instance_id: &'a str,
    pub namespace: &'a str,
    /// May contain `/`; it is sent as `%2F` inside its one path segment.
    pub repository: &'a str,
    pub digest: &'a str,
}

impl SwrClient {
    /// `GET /v2/{project_id}/instances/{instance_id}/namespaces/{namespace}/repositories/{repository}/artifacts/{digest}`.
    pub async fn show_instance_artifact(
        &self,
        artifact: ArtifactAddress<'_>,
    ) -> Result<SwrAnswer<InstanceArtifact>, SwrError> {
        let project_id = self.project_id().to_string();
        self.get_json(
            SHOW_INSTANCE_ARTIFACT,
            &[
                "v2",
                &project_id,
                "instances",
                artifact.instance_id,
                "namespaces",
                artifact.namespace,
                "repositories",
                artifact.repository,
                "artifacts",
                artifact.digest,
            ],
            &[],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_names_skip_missing_and_empty_names() {
        let artifact: InstanceArtifact = serde_json::from_str(
            r#"{"digest":"sha256:ab","media_type":"application/vnd.oci.image.manifest.v1+json",
                "tags":[{"id":1,"name":"v1"},{"id":2},{"name":""},{"name":"latest"}],"size":12}"#,
        )
        .expect("artifact");
        assert_eq!(artifact.tag_names().collect::<Vec<_>>(), ["v1", "latest"]);
    }

    #[test]
    fn an_untagged_artifact_has_no_tag_names() {
        for body in [
            r#"{"digest":"sha256:ab"}"#,
            r#"{"digest":"sha256:ab","tags":null}"#,
        ] {
            let artifact: InstanceArtifact = serde_json::from_str(body).expect("artifact");
            assert_eq!(artifact.tag_names().count(), 0, "{body}");
        }
    }
}
