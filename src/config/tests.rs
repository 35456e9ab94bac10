//! Loading and typing: every section refuses what it cannot type, naming the
//! key path, and hands downstream ready types.

use super::*;
use crate::domain::ImageType;

const HSS: &str = "[hss]\nregion = \"cn-north-4\"\nproject_id = \"p\"\nak = \"a\"\nsk = \"s\"\n";

fn load(extra: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(&format!("{HSS}{extra}"))
}

fn refused_key(toml: &str) -> String {
    match Settings::from_toml(toml) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

fn source(name: &str, verify: &str, extra: &str) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\nformat = \"harbor\"\nimage_type = \"private_image\"\n{extra}\n\
         [sources.verify]\n{verify}\n"
    )
}

#[test]
fn defaults_are_typed() {
    let settings = load("").expect("minimal config");
    assert_eq!(settings.server.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(settings.batch.window.get(), 2_000);
    assert_eq!(settings.store.lease.get(), 60_000);
    assert!(
        matches!(&settings.store.location, StoreLocation::Sqlite(path) if path.to_str() == Some("./data/bridge.db"))
    );
    assert_eq!(
        settings.hss.endpoint.url().as_str(),
        "https://hss.cn-north-4.myhuaweicloud.com/"
    );
    assert!(matches!(settings.hss.auth, HssAuth::Aksk { .. }));
}

#[test]
fn history_is_kept_thirty_days_unless_turned_off() {
    let default = load("").expect("minimal config");
    assert_eq!(
        default.store.history_retention.map(|span| span.get()),
        Some(30 * 24 * 3_600_000)
    );
    let off = load("[store]\nhistory_retention_s = 0\n").expect("history off");
    assert_eq!(off.store.history_retention, None);
}

#[test]
fn the_memory_store_is_not_a_configurable_store() {
    let toml = format!("{HSS}[store]\nurl = \"memory://\"\n");
    assert_eq!(refused_key(&toml), "store.url");
    let settings = load("[store]\nurl = \"postgres://u:pw@db/bridge\"\n").expect("postgres");
    let StoreLocation::Postgres(config) = &settings.store.location else {
        panic!("postgres expected");
    };
    assert_eq!(config.server(), "db:5432");
    let refused = load("[store]\nurl = \"postgres://u:pw@db/bridge?sslmode=sometimes\"\n")
        .expect_err("unknown sslmode");
    assert!(
        refused.to_string().contains("store.url") && refused.to_string().contains("sslmode"),
        "{refused}"
    );
    assert!(!refused.to_string().contains("pw"), "{refused}");
    assert!(
        !format!("{settings:?}").contains("pw@db"),
        "the URL is a secret"
    );
}

#[test]
fn spans_and_sizes_must_be_positive() {
    for (section, key) in [
        ("[batch]\nwindow_ms = 0", "batch.window_ms"),
        ("[batch]\nmax_images = 0", "batch.max_images"),
        ("[server]\nworkers = 0", "server.workers"),
        ("[server]\nmax_body_bytes = 0", "server.max_body_bytes"),
        ("[store]\nlease_ms = 10000", "store.lease_ms"),
        ("[log]\nlevel = \"=nonsense=\"", "log.level"),
    ] {
        assert_eq!(refused_key(&format!("{HSS}{section}\n")), key, "{section}");
    }
}

#[test]
fn each_auth_carries_its_own_fields() {
    let token = Settings::from_toml(
        "[hss]\nregion = \"eu-west-101\"\nproject_id = \"p\"\nauth = \"token\"\n\
         domain_name = \"d\"\nuser_name = \"u\"\npassword = \"pw\"\n",
    )
    .expect("token auth");
    let HssAuth::Token { iam_endpoint, .. } = &token.hss.auth else {
        panic!("token auth expected");
    };
    assert_eq!(
        iam_endpoint.url().as_str(),
        "https://iam.eu-west-101.myhuaweicloud.eu/"
    );
    assert_eq!(token.hss.auth.name(), "token");
    assert_eq!(
        refused_key(
            "[hss]\nregion = \"r\"\nproject_id = \"p\"\nauth = \"token\"\ndomain_name = \"d\"\nuser_name = \"u\"\n"
        ),
        "hss.password"
    );
    assert_eq!(
        refused_key(
            "[hss]\nregion = \"r\"\nproject_id = \"p\"\nauth = \"metadata\"\nmetadata_url = \"169.254.169.254\"\n"
        ),
        "hss.metadata_url"
    );
}

#[test]
fn source_errors_name_the_full_key_path() {
    let token = "scheme = \"token\"\nsecrets = [\"t\"]";
    let cases = [
        (
            source(
                "a",
                "scheme = \"standard-webhooks\"\nsecrets = [\"not-whsec\"]",
                "",
            ),
            "sources[0].verify.secrets[0]",
        ),
        (
            source("a", token, "") + "[sources.filter]\nexclude = [\"ok\", \"{open\"]\n",
            "sources[0].filter.exclude[1]",
        ),
        (
            source("a", token, "") + &source("a", token, ""),
            "sources[1].name",
        ),
        (source("a/b", token, ""), "sources[0].name"),
        (
            source("a", token, "rate_limit_per_s = 0"),
            "sources[0].rate_limit_per_s",
        ),
        (
            source(
                "a",
                "scheme = \"token\"\nheader = \"bad header\"\nsecrets = [\"t\"]",
                "",
            ),
            "sources[0].verify.header",
        ),
    ];
    for (sources, key) in cases {
        assert_eq!(refused_key(&format!("{HSS}{sources}")), key, "{sources}");
    }
}

#[test]
fn sources_carry_their_partition_and_compiled_parts() {
    let toml = format!(
        "{HSS}enterprise_project_id = \"ep\"\n{}{}",
        source(
            "ee",
            "scheme = \"hmac-sha256\"\nsecrets = [\"k\"]",
            "instance_url = \"ignored.example\"\ninstance_id = \"ignored\"",
        ),
        "[sources.filter]\ninclude = [\"team-a/**\"]\n"
    );
    let settings = Settings::from_toml(&toml).expect("valid");
    let source = settings.source("ee").expect("source");
    assert_eq!(source.partition.image_type, ImageType::PrivateImage);
    assert_eq!(source.partition.instance_id, None);
    assert_eq!(source.instance_url, None);
    assert_eq!(
        source.partition.enterprise_project_id.as_deref(),
        Some("ep")
    );
    assert_eq!(
        source
            .webhook()
            .expect("a webhook source")
            .verify
            .scheme_name(),
        "hmac-sha256"
    );
    assert!(
        source
            .filter
            .admits(&crate::domain::ImageRef::new("team-a", "api", "v1"))
    );
    assert!(
        !source
            .filter
            .admits(&crate::domain::ImageRef::new("team-b", "api", "v1"))
    );
}
