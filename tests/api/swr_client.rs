//! `SwrClient::show_instance_artifact` against the fake SWR EE, with each of
//! the three `[hss]` auth kinds: the same credentials that sign HSS calls
//! sign SWR calls, and the fake checks them with the same verifier.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use swr_scan_bridge::config::{HssSettings, Settings, SwrSettings};
use swr_scan_bridge::hss::credentials::ManualClock;
use swr_scan_bridge::ops::metrics::Metrics;
use swr_scan_bridge::swr::enterprise::ArtifactAddress;
use swr_scan_bridge::swr::{SwrClient, SwrErrorKind};

use crate::common::fake_hss::{FakeHss, Verdict};
use crate::common::fake_issuers::{FakeIam, FakeMetadata, IamUser};
use crate::common::fake_swr::FakeSwr;
use crate::common::helpers::{AK, INSTANCE_ID, PROJECT_ID, SK};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const PASSWORD: &str = "iam-password-do-not-log";

fn clock() -> Arc<ManualClock> {
    let start = DateTime::parse_from_rfc3339("2026-11-28T09:30:15Z")
        .expect("date")
        .with_timezone(&Utc);
    Arc::new(ManualClock::new(start))
}

fn hss_settings(extra: &str) -> HssSettings {
    let toml = format!(
        "[hss]\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT_ID}\"\nrequest_timeout_ms = 5000\n{extra}"
    );
    Settings::from_toml(&toml).expect("settings").hss
}

fn address(repository: &str) -> ArtifactAddress<'_> {
    ArtifactAddress {
        instance_id: INSTANCE_ID,
        namespace: "team-a",
        repository,
        digest: DIGEST,
    }
}

async fn tags_with(hss: HssSettings, swr: &FakeSwr, clock: Arc<ManualClock>) -> Vec<String> {
    let settings = SwrSettings {
        endpoint: swr_scan_bridge::config::ApiEndpoint::parse("swr.endpoint", &swr.uri())
            .expect("endpoint"),
    };
    let client = SwrClient::with_clock(&hss, &settings, Metrics::new().expect("metrics"), clock)
        .expect("client");
    let answer = client
        .show_instance_artifact(address("payments/api"))
        .await
        .expect("artifact");
    answer.body.tag_names().map(str::to_string).collect()
}

#[tokio::test]
async fn every_auth_kind_signs_show_instance_artifact() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    swr.put_artifact("team-a", "payments/api", DIGEST, &["v1", "latest"]);

    let aksk = hss_settings(&format!("auth = \"aksk\"\nak = \"{AK}\"\nsk = \"{SK}\""));
    assert_eq!(tags_with(aksk, &swr, clock()).await, ["v1", "latest"]);

    let metadata_clock = clock();
    let metadata = FakeMetadata::start(
        hss.credentials(),
        metadata_clock.clone(),
        Duration::from_secs(3600),
    )
    .await;
    let from_metadata = hss_settings(&format!(
        "auth = \"metadata\"\nmetadata_url = \"{}\"",
        metadata.uri()
    ));
    assert_eq!(
        tags_with(from_metadata, &swr, metadata_clock).await,
        ["v1", "latest"]
    );

    let iam_clock = clock();
    let iam = FakeIam::start(
        hss.credentials(),
        iam_clock.clone(),
        IamUser {
            domain_name: "example-domain".into(),
            user_name: "bridge-user".into(),
            password: PASSWORD.into(),
            project_id: PROJECT_ID.into(),
        },
        Duration::from_secs(3600),
    )
    .await;
    let token = hss_settings(&format!(
        "auth = \"token\"\niam_endpoint = \"{}\"\ndomain_name = \"example-domain\"\n\
         user_name = \"bridge-user\"\npassword = \"{PASSWORD}\"",
        iam.uri()
    ));
    assert_eq!(tags_with(token, &swr, iam_clock).await, ["v1", "latest"]);

    let verdicts: Vec<Verdict> = swr.requests().into_iter().map(|r| r.verdict).collect();
    assert_eq!(verdicts.len(), 3, "{verdicts:?}");
    assert_eq!(
        verdicts[0],
        Verdict::Signed {
            access_key: AK.into()
        }
    );
    assert_eq!(
        verdicts[1],
        Verdict::Signed {
            access_key: metadata.issued_keys()[0].access.clone()
        }
    );
    assert_eq!(verdicts[2], Verdict::Token);
}

#[tokio::test]
async fn a_wrong_secret_is_unauthorized_and_an_unknown_artifact_not_found() {
    let hss = FakeHss::start(AK, SK).await;
    let swr = FakeSwr::start(hss.credentials(), PROJECT_ID, INSTANCE_ID).await;
    let settings = SwrSettings {
        endpoint: swr_scan_bridge::config::ApiEndpoint::parse("swr.endpoint", &swr.uri())
            .expect("endpoint"),
    };
    let wrong = hss_settings(&format!(
        "auth = \"aksk\"\nak = \"{AK}\"\nsk = \"not-the-secret\""
    ));
    let client = SwrClient::with_clock(&wrong, &settings, Metrics::new().expect("m"), clock())
        .expect("client");
    let error = client
        .show_instance_artifact(address("api"))
        .await
        .expect_err("refused");
    assert_eq!(error.kind(), SwrErrorKind::Unauthorized);
    assert_eq!(error.status(), Some(401));

    let right = hss_settings(&format!("auth = \"aksk\"\nak = \"{AK}\"\nsk = \"{SK}\""));
    let client = SwrClient::with_clock(&right, &settings, Metrics::new().expect("m"), clock())
        .expect("client");
    let error = client
        .show_instance_artifact(address("api"))
        .await
        .expect_err("unknown");
    assert_eq!(error.kind(), SwrErrorKind::NotFound);
    assert_eq!(error.error_code(), Some("SVCSTG.SWR.4040003"));
}
