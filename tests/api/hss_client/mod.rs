//! `HssClient` against a fake HSS that verifies every signature: request
//! shape, the three auth modes with renewal, and outcome classification.
//!
//! One module per concern: [`signing`] (AK/SK request shape), [`outcomes`]
//! (classification), [`metadata`] and [`iam_token`] (renewing credentials),
//! [`log_secrets`]. Shared here: settings through the real loader, a manual
//! clock, the images and partitions every call sends.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use swr_scan_bridge::config::{HssSettings, Settings};
use swr_scan_bridge::domain::{ImageRef, ImageType, Partition};
use swr_scan_bridge::hss::credentials::ManualClock;
use swr_scan_bridge::hss::{HssApi, HssClient, ScanOutcome, ScanSender};
use swr_scan_bridge::store::BatchImage;
use wiremock::ResponseTemplate;

use crate::common::fake_hss::{Api, FakeHss, Reply, Verdict};
use crate::common::fake_issuers::{FakeIam, FakeMetadata, IamUser};
use crate::common::process::free_port;

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "HPUAEXAMPLEAKID0EXAM";
const SK: &str = "ExampleSecretKeyDoNotUse0123456789abcdef";
const START: &str = "2026-11-28T09:30:15Z";
const PASSWORD: &str = "iam-password-do-not-log";

fn start_time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(START)
        .unwrap()
        .with_timezone(&Utc)
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(start_time()))
}

/// `[hss]` settings through the real config loader, plus `extra` lines.
fn settings(extra: &str) -> HssSettings {
    let toml = format!(
        "[hss]\nregion = \"cn-north-4\"\nproject_id = \"{PROJECT}\"\nrequest_timeout_ms = 5000\n{extra}"
    );
    Settings::from_toml(&toml).unwrap().hss
}

fn aksk_settings(endpoint: &str) -> HssSettings {
    aksk_settings_with(endpoint, "")
}

fn aksk_settings_with(endpoint: &str, extra: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"aksk\"\nak = \"{AK}\"\nsk = \"{SK}\"\n{extra}"
    ))
}

fn metadata_settings(endpoint: &str, metadata_url: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"metadata\"\nmetadata_url = \"{metadata_url}\""
    ))
}

fn iam_user() -> IamUser {
    IamUser {
        domain_name: "example-domain".into(),
        user_name: "bridge-user".into(),
        password: PASSWORD.into(),
        project_id: PROJECT.into(),
    }
}

fn token_settings(endpoint: &str, iam_endpoint: &str, password: &str) -> HssSettings {
    settings(&format!(
        "endpoint = \"{endpoint}\"\nauth = \"token\"\niam_endpoint = \"{iam_endpoint}\"\n\
         domain_name = \"example-domain\"\nuser_name = \"bridge-user\"\npassword = \"{password}\""
    ))
}

fn private_partition(enterprise_project_id: Option<&str>) -> Partition {
    Partition {
        image_type: ImageType::PrivateImage,
        instance_id: None,
        enterprise_project_id: enterprise_project_id.map(str::to_string),
    }
}

fn images() -> Vec<BatchImage> {
    vec![
        BatchImage {
            image: ImageRef::new("test", "openjdk", "v8.8"),
            instance_url: None,
            digest: None,
        },
        BatchImage {
            image: ImageRef::new("test", "nginx", "1.27"),
            instance_url: None,
            digest: None,
        },
    ]
}

fn expected_private_body() -> serde_json::Value {
    json!({
        "image_type": "private_image",
        "image_info_list": [
            {"namespace": "test", "image_name": "openjdk", "image_version": "v8.8"},
            {"namespace": "test", "image_name": "nginx", "image_version": "1.27"}
        ]
    })
}

fn accepted(request_id: &str) -> ScanOutcome {
    ScanOutcome::Accepted {
        status: 200,
        request_id: Some(request_id.into()),
    }
}

/// A fake HSS that accepts only what `issuer` hands out, and a client that
/// fetches its credentials there; both on one manual clock.
struct Rig<Issuer> {
    hss: FakeHss,
    clock: Arc<ManualClock>,
    issuer: Issuer,
    client: HssClient,
}

/// A [`Rig`] whose metadata service issues keys valid for `lifetime`.
async fn metadata_rig(lifetime: Duration) -> Rig<FakeMetadata> {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let issuer = FakeMetadata::start(hss.credentials(), clock.clone(), lifetime).await;
    let client =
        HssClient::with_clock(&metadata_settings(&hss.uri(), &issuer.uri()), clock.clone())
            .unwrap();
    Rig {
        hss,
        clock,
        issuer,
        client,
    }
}

/// A [`Rig`] whose IAM issues day-long tokens; the client logs in with `password`.
async fn iam_rig(password: &str) -> Rig<FakeIam> {
    let hss = FakeHss::start_without_credentials().await;
    let clock = clock();
    let issuer = FakeIam::start(
        hss.credentials(),
        clock.clone(),
        iam_user(),
        Duration::from_secs(24 * 3600),
    )
    .await;
    let client = HssClient::with_clock(
        &token_settings(&hss.uri(), &issuer.uri(), password),
        clock.clone(),
    )
    .unwrap();
    Rig {
        hss,
        clock,
        issuer,
        client,
    }
}

mod iam_token;
mod log_secrets;
mod metadata;
mod outcomes;
mod scan_tasks;
mod signing;
