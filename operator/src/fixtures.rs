//! Test-only: a fake API server on a `tower_test` mock pair, after kube-rs's
//! controller-rs. Each expected call is checked by method, path and body, and
//! a call that never comes fails the test after a timeout instead of hanging.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use kube::Client;
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use crate::fence::Fence;
use crate::metrics::Metrics;
use crate::reconcile::Context;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Responder = tower_test::mock::SendResponse<Response<Body>>;

const WAIT: Duration = Duration::from_secs(5);

pub const NOW: &str = "2026-11-01T00:00:00Z";

fn fixed_clock() -> Timestamp {
    NOW.parse().unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A reconcile context whose client talks to the returned verifier.
pub fn context() -> (Arc<Context>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter { controller: "sigil-operator".into(), instance: None };
    let ctx = Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        metrics: Metrics::default(),
        now: fixed_clock,
        limits: crate::decide::Limits::default(),
        fence: Fence::open(),
        before_create: None,
        cluster_scope: true,
    };
    (Arc::new(ctx), ApiServerVerifier(handle))
}

/// One request the operator made.
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    responder: Responder,
}

impl Call {
    pub fn respond(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).expect("json");
        let response = Response::builder().status(status).body(Body::from(bytes)).expect("response");
        self.responder.send_response(response);
    }

    pub fn not_found(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                          "message": "not found"});
        self.respond(StatusCode::NOT_FOUND, &body);
    }

    /// Answers a status apply with the SigningKey it produced.
    pub fn stored_status(self) -> Value {
        let mut object = self.body.clone();
        object["metadata"] = json!({"name": "api", "namespace": "team", "resourceVersion": "99"});
        object["spec"] = json!({});
        self.respond(StatusCode::OK, &object);
        object
    }

    /// Answers an apply like the API server: the applied object, stored.
    pub fn stored(self, resource_version: &str) -> Value {
        let mut object = self.body.clone();
        object["metadata"]["resourceVersion"] = json!(resource_version);
        object["metadata"]["uid"] = json!(format!("uid-{resource_version}"));
        self.respond(StatusCode::OK, &object);
        object
    }

    /// Answers a create like the API server: stored, its fields owned by the
    /// creating manager's `Update` entry.
    pub fn created(self, resource_version: &str) -> Value {
        let mut object = self.body.clone();
        object["metadata"]["resourceVersion"] = json!(resource_version);
        object["metadata"]["uid"] = json!(format!("uid-{resource_version}"));
        object["metadata"]["managedFields"] = json!([{
            "manager": "sigil-operator", "operation": "Update", "apiVersion": "v1",
            "time": "2026-11-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}},
        }]);
        self.respond(StatusCode::CREATED, &object);
        object
    }

    /// Answers a merge patch of `object`'s metadata: `object` with the patched
    /// metadata fields and a new resourceVersion.
    pub fn patched(self, mut object: Value, resource_version: &str) -> Value {
        if let Some(fields) = self.body["metadata"].as_object() {
            for (key, value) in fields {
                object["metadata"][key] = value.clone();
            }
        }
        object["metadata"]["resourceVersion"] = json!(resource_version);
        self.respond(StatusCode::OK, &object);
        object
    }

    /// Refuses a create: the name is taken.
    pub fn already_exists(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists",
                          "code": 409, "message": "already exists"});
        self.respond(StatusCode::CONFLICT, &body);
    }
}

pub struct ApiServerVerifier(Handle);

impl ApiServerVerifier {
    /// The next call, which must have this method and path.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let next = tokio::time::timeout(WAIT, self.0.next_request()).await;
        let (request, responder) = next
            .unwrap_or_else(|_| panic!("no {method} {path} within {WAIT:?}"))
            .unwrap_or_else(|| panic!("client dropped before {method} {path}"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body,
            responder,
        };
        assert_eq!((call.method.as_str(), call.path.as_str()), (method, path), "unexpected call; query {}", call.query);
        call
    }

    /// A server-side apply by our field manager, with its body.
    pub async fn expect_apply(&mut self, path: &str) -> Call {
        let call = self.expect("PATCH", path).await;
        assert!(call.query.contains("fieldManager=sigil-operator"), "{}", call.query);
        assert!(call.query.contains("force=true"), "{}", call.query);
        call
    }

    /// A create (POST to the collection) by our field manager.
    pub async fn expect_create(&mut self, collection: &str) -> Call {
        let call = self.expect("POST", collection).await;
        assert!(call.query.contains("fieldManager=sigil-operator"), "{}", call.query);
        call
    }

    /// The patch that hands fields our create wrote to our apply manager,
    /// conditional on `resource_version`.
    pub async fn expect_adopt(&mut self, path: &str, resource_version: &str) -> Call {
        let call = self.expect("PATCH", path).await;
        assert!(!call.query.contains("force"), "a merge patch, not an apply: {}", call.query);
        assert_eq!(call.body["metadata"]["resourceVersion"], resource_version, "{}", call.body);
        let entries = call.body["metadata"]["managedFields"].as_array().expect("managedFields");
        let ours: Vec<_> = entries.iter().filter(|e| e["manager"] == "sigil-operator").collect();
        assert_eq!(ours.len(), 1, "{entries:?}");
        assert_eq!(ours[0]["operation"], "Apply");
        call
    }

    /// An events.k8s.io Event with this reason, answered as created.
    pub async fn expect_event(&mut self, namespace: &str, reason: &str) -> Value {
        let call = self.expect("POST", &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events")).await;
        assert_eq!(call.body["reason"], reason, "{}", call.body);
        let body = call.body.clone();
        call.respond(StatusCode::CREATED, &body);
        body
    }

    /// Asserts the operator makes no further call.
    pub async fn expect_silence(mut self) {
        let next = tokio::time::timeout(Duration::from_millis(200), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}
