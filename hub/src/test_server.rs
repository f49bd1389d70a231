//! A stand-in for the Hub for tests: a local HTTP server that answers as the Hub does
//! (repository info, `resolve` downloads with range requests, commit and etag headers) and serves
//! the small Qwen2 of `rl/fixtures/learning-base` (2 layers of width 64, the model the node's tests train), so no test reaches the internet. Compiled only
//! with the `test-server` feature, which only test builds enable.

// Test support: a failure here is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The commit `main` of every repository names.
pub const MAIN_COMMIT: &str = "1111111111111111111111111111111111111111";
/// The commit of tag `v1` of `tests/learning-base`, whose `config.json` ends in one more newline.
pub const TAGGED_COMMIT: &str = "2222222222222222222222222222222222222222";
/// The token `tests/private` wants.
pub const TOKEN: &str = "hf_test_token_never_printed";

/// One commit of a repository: file name to bytes.
pub type Files = BTreeMap<String, Vec<u8>>;

struct Repository {
    /// Revision (branch, tag or the commit itself) to commit.
    refs: BTreeMap<String, String>,
    commits: BTreeMap<String, Files>,
    private: bool,
}

#[derive(Default)]
pub struct Log {
    /// Every weights download request: the range's first byte.
    pub weight_ranges: Vec<u64>,
    pub weight_bytes_sent: u64,
}

/// A running server: `tests/learning-base` (public, `main` and `v1`) and `tests/private`.
pub struct FakeHub {
    pub endpoint: String,
    pub log: Arc<Mutex<Log>>,
    /// Cut the next full download of `model.safetensors` after half its bytes.
    pub cut_next_weights: Arc<AtomicBool>,
}

/// The files of `main`.
pub fn fixture() -> Files {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rl/fixtures/learning-base");
    ["config.json", "tokenizer.json", "model.safetensors"]
        .into_iter()
        .map(|f| (f.to_owned(), std::fs::read(dir.join(f)).unwrap()))
        .collect()
}

/// Starts a server on a free loopback port; it runs until the process ends.
pub fn serve() -> FakeHub {
    serve_on(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// The same on `host` (e.g. a test bed's bridge address, which its pods reach), on a free port.
pub fn serve_on(host: IpAddr) -> FakeHub {
    let main = fixture();
    let mut tagged = main.clone();
    tagged.insert(
        "config.json".into(),
        [main["config.json"].as_slice(), b"\n"].concat(),
    );
    let public = Repository {
        refs: [
            ("main".to_owned(), MAIN_COMMIT.to_owned()),
            ("v1".to_owned(), TAGGED_COMMIT.to_owned()),
        ]
        .into(),
        commits: [
            (MAIN_COMMIT.to_owned(), main.clone()),
            (TAGGED_COMMIT.to_owned(), tagged),
        ]
        .into(),
        private: false,
    };
    let private = Repository {
        refs: [("main".to_owned(), MAIN_COMMIT.to_owned())].into(),
        commits: [(MAIN_COMMIT.to_owned(), main)].into(),
        private: true,
    };
    let repos: Arc<BTreeMap<String, Repository>> = Arc::new(
        [
            ("tests/learning-base".to_owned(), public),
            ("tests/private".to_owned(), private),
        ]
        .into(),
    );
    let listener = TcpListener::bind((host, 0)).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let cut = Arc::new(AtomicBool::new(false));
    let (server_log, server_cut) = (Arc::clone(&log), Arc::clone(&cut));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let (repos, log, cut) = (
                Arc::clone(&repos),
                Arc::clone(&server_log),
                Arc::clone(&server_cut),
            );
            std::thread::spawn(move || answer(stream.unwrap(), &repos, &log, &cut));
        }
    });
    FakeHub {
        endpoint,
        log,
        cut_next_weights: cut,
    }
}

fn answer(
    stream: TcpStream,
    repos: &BTreeMap<String, Repository>,
    log: &Mutex<Log>,
    cut: &AtomicBool,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    reader.read_line(&mut request_line).unwrap();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .replace("%2F", "/");
    let mut stream = stream;
    let authorized =
        headers.get("authorization").map(String::as_str) == Some(&format!("Bearer {TOKEN}"));
    let respond = |stream: &mut TcpStream, status: &str, extra: &[(&str, String)], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (name, value) in extra {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    };
    // /api/models/<owner>/<name>/revision/<revision>
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let (id, revision) = rest.split_once("/revision/").unwrap_or((rest, "main"));
        let Some(repo) = repos.get(id) else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[],
                b"{\"error\":\"Repository not found\"}",
            );
        };
        if repo.private && !authorized {
            return respond(
                &mut stream,
                "401 Unauthorized",
                &[],
                b"{\"error\":\"Invalid credentials\"}",
            );
        }
        let commit = repo.refs.get(revision).cloned().or_else(|| {
            repo.commits
                .contains_key(revision)
                .then(|| revision.to_owned())
        });
        let Some(commit) = commit else {
            return respond(
                &mut stream,
                "404 Not Found",
                &[],
                b"{\"error\":\"Revision not found\"}",
            );
        };
        let siblings: Vec<String> = repo.commits[&commit]
            .keys()
            .map(|f| format!("{{\"rfilename\":\"{f}\"}}"))
            .collect();
        let body = format!(
            "{{\"sha\":\"{commit}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return respond(&mut stream, "200 OK", &[], body.as_bytes());
    }
    // /<owner>/<name>/resolve/<revision>/<file>
    let Some((id, rest)) = path.trim_start_matches('/').split_once("/resolve/") else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let (revision, file) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(repo) = repos.get(id) else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    if repo.private && !authorized {
        return respond(&mut stream, "401 Unauthorized", &[], b"");
    }
    let commit = repo
        .refs
        .get(revision)
        .cloned()
        .unwrap_or_else(|| revision.to_owned());
    let Some(bytes) = repo.commits.get(&commit).and_then(|files| files.get(file)) else {
        return respond(&mut stream, "404 Not Found", &[], b"");
    };
    let start: u64 = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let probe = headers.get("range").map(String::as_str) == Some("bytes=0-0");
    let size = bytes.len() as u64;
    let body = if probe {
        &bytes[..1]
    } else {
        &bytes[start as usize..]
    };
    let end = if probe { 0 } else { size - 1 };
    let extra = [
        ("ETag", format!("\"{commit}-{file}\"")),
        ("X-Repo-Commit", commit.clone()),
        ("Content-Range", format!("bytes {start}-{end}/{size}")),
    ];
    if file == "model.safetensors" && !probe {
        let mut log = log.lock().unwrap();
        log.weight_ranges.push(start);
        if start == 0 && cut.swap(false, Ordering::SeqCst) {
            // Announce the whole body, send half of it, hang up.
            let half = body.len() / 2;
            log.weight_bytes_sent += half as u64;
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\nETag: \"{commit}-{file}\"\r\nX-Repo-Commit: {commit}\r\nContent-Range: bytes 0-{end}/{size}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..half]);
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        log.weight_bytes_sent += body.len() as u64;
    }
    respond(&mut stream, "206 Partial Content", &extra, body);
}
