//! The sidecar-injection admission webhook: the API server sends every Pod
//! labelled `sigil.dev/inject=enabled` here before storing it, and gets back
//! a JSON patch that adds `sigil-sidecar` (`inject` decides what it adds).
//!
//! Every replica serves it, leader or not: admission must not wait for an
//! election. Serving reads only (the SigningKey the Pod names, and the Pod's
//! Namespace to check the SigningKey distributes there); the one write, the
//! certificate, is the leader's (`cert`).

pub mod cert;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::Api;
use kube::core::SelectorExt;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use sigil_api::signing_key::SigningKey;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::inject::{self, Defaults, Keys};
use cert::Served;

/// The path the MutatingWebhookConfiguration calls.
pub const PATH: &str = "/inject";
/// The API server sends at most 3 MiB per object; more is not a Pod.
const MAX_BODY: usize = 4 << 20;

/// What each admission needs.
pub struct Injector {
    pub client: Client,
    pub defaults: Defaults,
    pub metrics: InjectionMetrics,
}

/// `sigil_operator_injections_total{result}`: injected, refused (the Pod's
/// fault, message returned to its creator) or error (ours or the API's).
#[derive(Clone, Default)]
pub struct InjectionMetrics(Family<Vec<(&'static str, &'static str)>, Counter>);

impl InjectionMetrics {
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("sigil_operator");
        sub.register("injections", "Pods the sidecar-injection webhook answered, by result", self.0.clone());
    }

    fn count(&self, result: &'static str) {
        self.0.get_or_create(&vec![("result", result)]).inc();
    }
}

/// Serves HTTPS on `listener` with the certificate `served` holds, until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    injector: Arc<Injector>,
    served: Served,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = match ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => builder.with_no_client_auth().with_cert_resolver(Arc::new(Resolver(served))),
        Err(e) => {
            warn!(error = %e, "webhook TLS configuration");
            return;
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    info!(addr = ?listener.local_addr().ok(), "injection webhook listening");
    let drain = std::time::Duration::from_secs(10);
    sigil_runtime::serve::connections(listener, shutdown, drain, move |stream, _remote: SocketAddr| {
        let injector = injector.clone();
        let service = hyper::service::service_fn(move |req| handle(injector.clone(), req));
        let stream = sigil_runtime::tls::Stream::accept(stream, Some(&acceptor));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        builder.serve_connection(TokioIo::new(stream), service).into_owned()
    })
    .await;
}

#[derive(Debug)]
struct Resolver(Served);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // None until the Secret first holds a pair: the handshake fails and
        // the API server applies the failurePolicy.
        self.0.current()
    }
}

async fn handle(injector: Arc<Injector>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::POST || req.uri().path() != PATH {
        return Ok(plain(StatusCode::NOT_FOUND, "not found"));
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large or unreadable")),
    };
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return Ok(plain(StatusCode::BAD_REQUEST, &format!("not an AdmissionReview: {e}"))),
    };
    let request: Result<AdmissionRequest<Pod>, _> = review.try_into();
    let response = match request {
        Ok(request) => injector.admit(&request).await,
        Err(e) => AdmissionResponse::invalid(e),
    };
    let json = serde_json::to_vec(&response.into_review()).unwrap_or_default();
    let mut res = Response::new(Full::new(Bytes::from(json)));
    res.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(res)
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *res.status_mut() = status;
    res
}

/// Why an admission did not inject.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    /// The Pod (or the SigningKey it names) is wrong; its creator can fix it.
    #[error("sigil injection: {0}")]
    Pod(String),
    /// The API server could not be read.
    #[error("sigil injection: cannot read {what}: {error}")]
    Api { what: String, error: kube::Error },
}

impl From<inject::InjectError> for Refusal {
    fn from(e: inject::InjectError) -> Self {
        Refusal::Pod(e.to_string())
    }
}

impl Injector {
    pub async fn admit(&self, request: &AdmissionRequest<Pod>) -> AdmissionResponse {
        let response = AdmissionResponse::from(request);
        // Only creation injects: a Pod's containers cannot change afterwards.
        let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else { return response };
        let namespace = request.namespace.clone().or_else(|| pod.metadata.namespace.clone()).unwrap_or_default();
        let result = match self.injected(pod, &namespace).await {
            Ok(injected) => {
                let before = serde_json::to_value(pod).unwrap_or_default();
                let after = serde_json::to_value(&injected).unwrap_or_default();
                response.with_patch(json_patch::diff(&before, &after)).map_err(|e| Refusal::Pod(e.to_string()))
            }
            Err(refusal) => Err(refusal),
        };
        let pod_name = pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.clone()).unwrap_or_default();
        match result {
            Ok(response) => {
                self.metrics.count("injected");
                info!(namespace = %namespace, pod = %pod_name, "sidecar injected");
                response
            }
            Err(refusal) => {
                self.metrics.count(if matches!(refusal, Refusal::Pod(_)) { "refused" } else { "error" });
                warn!(namespace = %namespace, pod = %pod_name, reason = %refusal, "sidecar not injected; pod refused");
                AdmissionResponse::from(request).deny(refusal)
            }
        }
    }

    async fn injected(&self, pod: &Pod, namespace: &str) -> Result<Pod, Refusal> {
        let key = inject::signing_key(pod, namespace, &self.defaults)?;
        let api: Api<SigningKey> = Api::namespaced(self.client.clone(), &key.namespace);
        let what = || format!("SigningKey {key}");
        let signing_key = api
            .get_opt(&key.name)
            .await
            .map_err(|error| Refusal::Api { what: what(), error })?
            .ok_or_else(|| Refusal::Pod(format!("SigningKey {key} does not exist")))?;
        let spec = signing_key
            .spec
            .validate(&key.name)
            .map_err(|e| Refusal::Pod(format!("SigningKey {key} is invalid: {e}")))?;
        let config_map = if key.namespace == namespace {
            spec.jwks_config_map_name.clone()
        } else {
            let Some(distribution) = &spec.distribution else {
                return Err(Refusal::Pod(format!(
                    "SigningKey {key} publishes its keys only in namespace {}; set its spec.distribution.namespaceSelector to select namespace {namespace}",
                    key.namespace
                )));
            };
            let namespaces: Api<Namespace> = Api::all(self.client.clone());
            let ns = namespaces
                .get(namespace)
                .await
                .map_err(|error| Refusal::Api { what: format!("namespace {namespace}"), error })?;
            let labels = ns.metadata.labels.unwrap_or_default();
            if !distribution.selector.matches(&labels) {
                return Err(Refusal::Pod(format!(
                    "SigningKey {key} does not publish its keys in namespace {namespace}: its spec.distribution.namespaceSelector ({}) does not select the namespace's labels",
                    distribution.selector
                )));
            }
            distribution.config_map_name.clone()
        };
        let keys = Keys { config_map, algorithm: spec.algorithm, max_token_lifetime: spec.max_token_lifetime };
        Ok(inject::inject(pod, &self.defaults, &keys)?)
    }
}
