//! `data fetch` against a real HTTP server on loopback: downloads and verifies every upstream
//! file, keeps verified files on the next run, refuses a corrupted file, and says what to do when
//! the server cannot be reached.

mod common;

use guardreasoner_eval::data::{fetch, DataDir, FetchStatus};
use guardreasoner_eval::EvalError;
use guardreasoner_testkit::{read_request, respond};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Serves `<dir>/<name>` for `GET /<name>`; `corrupt` names a file served with one byte changed.
fn serve(dir: PathBuf, corrupt: Option<&'static str>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(request) = read_request(&stream) else {
                continue;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let name = request.path.trim_start_matches('/');
            match std::fs::read(dir.join(name)) {
                Ok(mut body) => {
                    if Some(name) == corrupt {
                        body[10] ^= 1;
                    }
                    respond(&stream, 200, &[], &body, true);
                }
                Err(_) => respond(&stream, 404, &[], b"", true),
            }
        }
    });
    (format!("http://{addr}"), hits)
}

#[test]
fn fetch_downloads_verifies_and_keeps_files() {
    let source = common::data_root().join("benchmark");
    let (url, hits) = serve(source.clone(), None);
    let tmp = tempfile::tempdir().unwrap();
    let dest = DataDir::new(tmp.path());
    let mut bytes = 0u64;
    let report = fetch(&dest, &url, &mut |e| {
        if let guardreasoner_eval::data::FetchEvent::Bytes(n) = e {
            bytes += n
        }
    })
    .unwrap();
    let downloaded = report
        .iter()
        .filter(|(_, s)| matches!(s, FetchStatus::Downloaded { .. }))
        .count();
    assert_eq!(downloaded, 10);
    assert!(report
        .iter()
        .any(|(f, s)| !f.upstream && *s == FetchStatus::NotUpstream));
    assert!(bytes > 10_000_000);
    for (file, _) in report.iter().filter(|(f, _)| f.upstream) {
        let path = dest.benchmark_file(file.benchmark).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(source.join(file.benchmark.file_name())).unwrap()
        );
    }
    let before = hits.load(Ordering::SeqCst);
    let again = fetch(&dest, &url, &mut |_| {}).unwrap();
    assert_eq!(
        again
            .iter()
            .filter(|(_, s)| *s == FetchStatus::UpToDate)
            .count(),
        10
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "verified files are not downloaded again"
    );
}

#[test]
fn corrupted_download_is_refused_and_not_kept() {
    let source = common::data_root().join("benchmark");
    let (url, _) = serve(source, Some("0_1_AegisSafetyTest.json"));
    let tmp = tempfile::tempdir().unwrap();
    let dest = DataDir::new(tmp.path());
    let err = fetch(&dest, &url, &mut |_| {}).unwrap_err();
    assert!(matches!(err, EvalError::Checksum { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("0_1_AegisSafetyTest.json: SHA-256 mismatch"),
        "{err}"
    );
    let dir = tmp.path().join("benchmark");
    assert!(!dir.join("0_1_AegisSafetyTest.json").exists());
    assert!(!dir.join("0_1_AegisSafetyTest.json.part").exists());
    // the file fetched before the bad one stays
    assert!(dir.join("0_0_SimpleSafetyTests.json").exists());
}

#[test]
fn unreachable_server_gives_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch(
        &DataDir::new(tmp.path()),
        &format!("http://{addr}"),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("download of http://"), "{msg}");
    assert!(msg.contains("GUARDREASONER_DATA_DIR"), "{msg}");
}
