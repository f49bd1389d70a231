//! `fetch` against the stand-in Hub of `swarm_hub::test_server`, which serves a small Qwen2.
//! Nothing here reaches the internet.

// clippy's allow-unwrap-in-tests covers #[test] functions only, not this file's helpers.
#![allow(clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use swarm_hub::test_server::{FakeHub, Files, MAIN_COMMIT, TAGGED_COMMIT, TOKEN, fixture, serve};
use swarm_hub::{HubError, HubModel, HubOptions, cached, fetch};

fn options(hub: &FakeHub, cache: &Path) -> HubOptions {
    HubOptions {
        cache_dir: cache.to_owned(),
        endpoint: hub.endpoint.clone(),
        token: None,
        retries: 0,
    }
}

fn model(id: &str, revision: Option<&str>) -> HubModel {
    HubModel {
        id: id.into(),
        revision: revision.map(Into::into),
    }
}

fn assert_files(dir: &Path, expected: &Files) {
    for (file, bytes) in expected {
        assert_eq!(&std::fs::read(dir.join(file)).unwrap(), bytes, "{file}");
    }
}

#[test]
fn a_model_is_fetched_at_its_commit_and_found_again_offline() {
    let hub = serve();
    let cache = tempfile::tempdir().unwrap();
    let reports = Mutex::new(Vec::new());
    let fetched = fetch(
        &model("tests/learning-base", None),
        &options(&hub, cache.path()),
        &|p| reports.lock().unwrap().push(p),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fetched.commit, MAIN_COMMIT);
    assert_files(&fetched.dir, &fixture());
    let reports = reports.into_inner().unwrap();
    let weights = reports
        .iter()
        .rfind(|p| p.file == "model.safetensors")
        .unwrap();
    assert_eq!(weights.bytes, weights.total);
    assert_eq!(
        cached(&model("tests/learning-base", Some("main")), cache.path()),
        Some(fetched.clone())
    );

    // A second fetch downloads nothing.
    let before = hub.log.lock().unwrap().weight_ranges.len();
    let again = fetch(
        &model("tests/learning-base", None),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap();
    assert_eq!(again, fetched);
    assert_eq!(hub.log.lock().unwrap().weight_ranges.len(), before);
}

#[test]
fn a_revision_is_pinned_to_its_own_commit() {
    let hub = serve();
    let cache = tempfile::tempdir().unwrap();
    let tagged = fetch(
        &model("tests/learning-base", Some("v1")),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap();
    assert_eq!(tagged.commit, TAGGED_COMMIT);
    let config = std::fs::read(tagged.dir.join("config.json")).unwrap();
    assert_eq!(
        config,
        [fixture()["config.json"].as_slice(), b"\n"].concat()
    );
    let main = fetch(
        &model("tests/learning-base", Some("main")),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap();
    assert_eq!(main.commit, MAIN_COMMIT);
    assert_ne!(main.dir, tagged.dir);
    assert_eq!(
        cached(&model("tests/learning-base", Some("v1")), cache.path())
            .unwrap()
            .commit,
        TAGGED_COMMIT
    );
    let by_commit = fetch(
        &model("tests/learning-base", Some(TAGGED_COMMIT)),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap();
    assert_eq!(by_commit.commit, TAGGED_COMMIT);
}

#[test]
fn an_unknown_model_or_revision_is_not_found() {
    let hub = serve();
    let cache = tempfile::tempdir().unwrap();
    for (id, revision) in [("tests/nope", None), ("tests/learning-base", Some("v9"))] {
        let err = fetch(&model(id, revision), &options(&hub, cache.path()), &|_| {}).unwrap_err();
        assert!(matches!(err, HubError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("HTTP 404"), "{err}");
    }
    assert_eq!(cached(&model("tests/nope", None), cache.path()), None);
}

#[test]
fn a_private_model_needs_the_token_which_no_error_shows() {
    let hub = serve();
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(
        &model("tests/private", None),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap_err();
    assert!(
        matches!(err, HubError::Unauthorized { status: 401, .. }),
        "{err}"
    );
    let with_token = HubOptions {
        token: Some(TOKEN.into()),
        ..options(&hub, cache.path())
    };
    assert!(!format!("{with_token:?}").contains(TOKEN));
    let fetched = fetch(&model("tests/private", None), &with_token, &|_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_files(&fetched.dir, &fixture());
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let hub = serve();
    let cache = tempfile::tempdir().unwrap();
    let size = fixture()["model.safetensors"].len() as u64;

    // Without retries the broken download fails the fetch, and leaves its part behind.
    hub.cut_next_weights.store(true, Ordering::SeqCst);
    let err = fetch(
        &model("tests/learning-base", None),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
    assert_eq!(
        cached(&model("tests/learning-base", None), cache.path()),
        None
    );

    // The next fetch (a restarted container) asks only for the rest.
    let fetched = fetch(
        &model("tests/learning-base", None),
        &options(&hub, cache.path()),
        &|_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_files(&fetched.dir, &fixture());
    let log = hub.log.lock().unwrap();
    assert_eq!(log.weight_ranges.len(), 2, "{:?}", log.weight_ranges);
    assert_eq!(log.weight_ranges[0], 0);
    assert_eq!(
        log.weight_ranges[1],
        size / 2,
        "resumed at the first missing byte"
    );
    assert_eq!(log.weight_bytes_sent, size, "no byte sent twice");
    drop(log);

    // With retries, one fetch gets over the break by itself.
    let cache = tempfile::tempdir().unwrap();
    hub.cut_next_weights.store(true, Ordering::SeqCst);
    let retrying = HubOptions {
        retries: 2,
        ..options(&hub, cache.path())
    };
    let fetched = fetch(&model("tests/learning-base", None), &retrying, &|_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_files(&fetched.dir, &fixture());
}

#[test]
fn an_unreachable_hub_is_a_network_error() {
    let cache = tempfile::tempdir().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = HubOptions {
        cache_dir: cache.path().to_owned(),
        endpoint: format!("http://{closed}"),
        token: None,
        retries: 0,
    };
    let err = fetch(&model("tests/learning-base", None), &options, &|_| {}).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
}
