//! A scripted Kubernetes API server for reconcile tests: every request the reconciler sends must be
//! the next one the scenario expects, and the scenario answers each with a canned response.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

pub mod fixtures;

/// How long a scenario may take before it counts as hung.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const FIELD_MANAGER: &str = "rl-swarm-operator";
pub const APPLY_CONTENT_TYPE: &str = "application/apply-patch+yaml";

/// How long a scenario may go on after the reconciler returned (its last assertions).
const GRACE: Duration = Duration::from_secs(1);

/// The server side of a mocked [`Client`].
pub struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
    log: Arc<Mutex<Log>>,
}

/// What the scenario has done, readable while it runs, for failure messages.
#[derive(Debug, Default)]
struct Log {
    /// Requests received, in order.
    seen: Vec<String>,
    /// The request the scenario waits for.
    waiting_for: Option<String>,
}

/// One request the reconciler sent, waiting for its answer.
pub struct Exchange {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The JSON body, or `Value::Null` when there was none.
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

/// A client talking to a fresh scripted server.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (
        client,
        ApiServer {
            handle,
            log: Arc::default(),
        },
    )
}

impl ApiServer {
    /// The next request, which must have this method and path (query excluded).
    pub async fn expect(&mut self, method: Method, path: &str) -> Exchange {
        let wanted = format!("{method} {path}");
        self.log.lock().unwrap().waiting_for = Some(wanted.clone());
        let next = tokio::time::timeout(TIMEOUT, self.handle.next_request())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "expected {wanted}, but no request came within {TIMEOUT:?}; received before: {:#?}",
                    self.seen()
                )
            });
        let Some((request, send)) = next else {
            panic!(
                "expected {wanted}, but the client is gone; received before: {:#?}",
                self.seen()
            )
        };
        let exchange = Exchange::read(request, send).await;
        let got = format!("{} {}", exchange.method, exchange.path);
        assert!(
            got == wanted,
            "expected {wanted}, got {got} (query {:?}); received before: {:#?}",
            exchange.query,
            self.seen()
        );
        let mut log = self.log.lock().unwrap();
        log.seen.push(got);
        log.waiting_for = None;
        drop(log);
        exchange
    }

    fn seen(&self) -> Vec<String> {
        self.log.lock().unwrap().seen.clone()
    }

    pub async fn get(&mut self, path: &str) -> Exchange {
        self.expect(Method::GET, path).await
    }

    /// A server-side apply of `path` by the operator's field manager, forced.
    pub async fn apply(&mut self, path: &str) -> Exchange {
        let exchange = self.expect(Method::PATCH, path).await;
        exchange.assert_apply();
        exchange
    }

    /// An Event (`events.k8s.io/v1`) posted in `namespace` with this type and reason; answered.
    /// Returns the Event.
    pub async fn event(&mut self, namespace: &str, type_: &str, reason: &str) -> Value {
        let exchange = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            )
            .await;
        let event = exchange.body.clone();
        assert_eq!(event["reason"], reason, "event {event:#}");
        assert_eq!(event["type"], type_, "event {event:#}");
        assert_eq!(
            event["reportingController"], FIELD_MANAGER,
            "event {event:#}"
        );
        exchange.created();
        event
    }

    /// The next request, if one comes: after the scenario ended, any request is unexpected.
    async fn unexpected(&mut self) -> Option<String> {
        let (request, _) = self.handle.next_request().await?;
        Some(format!("{} {}", request.method(), request.uri()))
    }
}

impl Exchange {
    async fn read(request: Request<Body>, send: SendResponse<Response<Body>>) -> Self {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{} {}: body is not JSON ({e}): {}",
                    parts.method,
                    parts.uri,
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        let query = parts
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                        (key.to_owned(), percent_decode(value))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned()),
            body,
            send,
        }
    }

    pub fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    /// A forced server-side apply under the operator's field manager.
    pub fn assert_apply(&self) {
        assert_eq!(
            self.content_type.as_deref(),
            Some(APPLY_CONTENT_TYPE),
            "{} {}",
            self.method,
            self.path
        );
        assert_eq!(
            self.query("fieldManager"),
            Some(FIELD_MANAGER),
            "{}",
            self.path
        );
        assert_eq!(self.query("force"), Some("true"), "{}", self.path);
    }

    /// The body as a typed object.
    pub fn parse<K: serde::de::DeserializeOwned>(&self) -> K {
        serde_json::from_value(self.body.clone()).unwrap_or_else(|e| {
            panic!(
                "{} {}: cannot read body as {}: {e}\n{:#}",
                self.method,
                self.path,
                std::any::type_name::<K>(),
                self.body
            )
        })
    }

    pub fn respond(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.send.send_response(response);
    }

    /// 200 with this plain text, as a container's log comes.
    pub fn ok_text(self, text: &str) {
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "text/plain")
            .body(Body::from(text.as_bytes().to_vec()))
            .unwrap();
        self.send.send_response(response);
    }

    /// 200 with this object.
    pub fn ok(self, body: &Value) {
        self.respond(StatusCode::OK, body);
    }

    /// 200 with `object` serialized.
    pub fn ok_with<K: serde::Serialize>(self, object: &K) {
        let body = serde_json::to_value(object).unwrap();
        self.ok(&body);
    }

    /// 201 with the posted object, as the API server would store it.
    pub fn created(self) {
        let body = stored(self.body.clone());
        self.respond(StatusCode::CREATED, &body);
    }

    /// 200 with the applied object, as the API server would store it.
    pub fn applied(self) {
        let body = stored(self.body.clone());
        self.ok(&body);
    }

    pub fn not_found(self) {
        let message = format!("{} not found", self.path);
        self.failure(StatusCode::NOT_FOUND, "NotFound", &message);
    }

    pub fn conflict(self) {
        self.failure(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version and try again",
        );
    }

    pub fn failure(self, status: StatusCode, reason: &str, message: &str) {
        let body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": status.as_u16(),
        });
        self.respond(status, &body);
    }
}

/// A value a scenario hands back to its test, such as a status it saw written.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Value>>);

impl Captured {
    pub fn set(&self, value: Value) {
        *self.0.lock().unwrap() = value;
    }

    pub fn get(&self) -> Value {
        self.0.lock().unwrap().clone()
    }
}

/// `object` with the fields the API server adds on write.
pub fn stored(mut object: Value) -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let metadata = object
        .as_object_mut()
        .expect("object body")
        .entry("metadata")
        .or_insert_with(|| json!({}));
    let metadata = metadata.as_object_mut().unwrap();
    metadata
        .entry("uid")
        .or_insert_with(|| json!(format!("00000000-0000-4000-9000-{n:012}")));
    metadata.insert("resourceVersion".into(), json!(n.to_string()));
    metadata.entry("generation").or_insert_with(|| json!(1));
    metadata
        .entry("creationTimestamp")
        .or_insert_with(|| json!("2025-01-01T00:00:00Z"));
    object
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Runs `reconcile` against `server` scripted by `scenario`, and returns what the reconciler returned.
///
/// Fails when the scenario fails an assertion, when the reconciler sends a request after the
/// scenario's last one, when it returns before sending every request the scenario expects, or when
/// either takes longer than [`TIMEOUT`].
pub async fn run<T, S, F, R>(server: ApiServer, scenario: S, reconcile: R) -> T
where
    S: FnOnce(ApiServer) -> F,
    F: Future<Output = ApiServer> + Send + 'static,
    R: Future<Output = T>,
    T: Debug,
{
    let log = server.log.clone();
    let mut scenario = tokio::spawn(scenario(server));
    let reconcile = tokio::time::timeout(TIMEOUT, reconcile);
    tokio::pin!(reconcile);

    tokio::select! {
        outcome = &mut reconcile => {
            let Ok(result) = outcome else {
                panic!("the reconciler did not finish within {TIMEOUT:?}; scenario: {:#?}", log.lock().unwrap());
            };
            // Only the scenario's own last assertions may still be running.
            match tokio::time::timeout(GRACE, &mut scenario).await {
                Ok(joined) => drop(scenario_server(joined)),
                Err(_) => {
                    scenario.abort();
                    let log = log.lock().unwrap();
                    panic!(
                        "the reconciler returned {result:?} without sending {}; received before: {:#?}",
                        log.waiting_for.as_deref().unwrap_or("every expected request"),
                        log.seen
                    );
                }
            }
            result
        }
        joined = &mut scenario => {
            let mut server = scenario_server(joined);
            tokio::select! {
                biased;
                Some(extra) = server.unexpected() => panic!(
                    "unexpected request {extra} after the scenario's last one; received before: {:#?}",
                    server.seen()
                ),
                outcome = &mut reconcile => match outcome {
                    Ok(result) => result,
                    Err(_) => panic!("the reconciler did not finish within {TIMEOUT:?} after the scenario ended"),
                },
            }
        }
    }
}

/// The server back from a finished scenario task, or the scenario's own panic.
fn scenario_server(joined: Result<ApiServer, tokio::task::JoinError>) -> ApiServer {
    match joined {
        Ok(server) => server,
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(join) => panic!("scenario task failed: {join}"),
        },
    }
}
