//! The demo embeds copies of the shared sample payloads; they must not drift.

#[test]
fn fixtures_match_the_shared_samples() {
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/samples");
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(shared)
        .expect("shared samples beside the repository")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let expected = std::fs::read(format!("{shared}/{name}")).expect("shared sample");
        let copy = std::fs::read(format!("{local}/{name}")).unwrap_or_else(|e| {
            panic!("fixtures/{name} is missing ({e}); copy it from ../shared/samples")
        });
        assert_eq!(
            copy, expected,
            "fixtures/{name} differs from ../shared/samples/{name}"
        );
    }
}
