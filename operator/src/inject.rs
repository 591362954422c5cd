//! Sidecar injection, pure: a Pod and what it asks for in, the Pod with
//! `sigil-sidecar` added out, or why not. The webhook (`webhook`) does the
//! I/O: it reads the SigningKey the Pod names and turns the difference
//! between the two Pods into a JSON patch.
//!
//! The sidecar is a native sidecar (an init container with
//! `restartPolicy: Always`): it starts, and is ready with its keys loaded,
//! before any other container, and stops after the app. Traffic reaches it
//! through a named port ([`PORT_NAME`]) the Service targets; nothing needs
//! privileges to redirect it.
//!
//! Injection is idempotent: a Pod injected before is injected again from
//! scratch (our container and volume replaced, never duplicated), so the
//! result of injecting twice equals injecting once.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, HTTPGetAction, Pod, Probe, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sigil_api::algorithm::Algorithm;

/// Pod label that opts in; the webhook's objectSelector matches it.
pub const LABEL_INJECT: &str = "sigil.dev/inject";
/// The one value of [`LABEL_INJECT`] that injects.
pub const INJECT_ENABLED: &str = "enabled";
/// `<namespace>/<name>` or `<name>` (the Pod's namespace) of the SigningKey
/// whose keys verify; default: the operator's `--inject-default-signing-key`.
pub const ANNOTATION_SIGNING_KEY: &str = "sigil.dev/signing-key";
/// Accepted `aud` values, comma-separated. Required: a verifier without an
/// audience would accept tokens minted for any other service (RFC 9068 4).
pub const ANNOTATION_AUDIENCE: &str = "sigil.dev/audience";
/// The app's port, a number or the name of one of its container ports. Required.
pub const ANNOTATION_UPSTREAM_PORT: &str = "sigil.dev/upstream-port";
/// Path prefixes served without a token, comma-separated.
pub const ANNOTATION_PUBLIC_PATHS: &str = "sigil.dev/public-paths";
/// Scope rules, space-separated `PREFIX=SCOPE[,SCOPE]`.
pub const ANNOTATION_REQUIRE_SCOPES: &str = "sigil.dev/require-scopes";
/// The sidecar's proxy port (default [`DEFAULT_PROXY_PORT`]).
pub const ANNOTATION_PROXY_PORT: &str = "sigil.dev/proxy-port";
/// The sidecar's admin port: probes and metrics (default [`DEFAULT_ADMIN_PORT`]).
pub const ANNOTATION_ADMIN_PORT: &str = "sigil.dev/admin-port";

pub const CONTAINER_NAME: &str = "sigil-sidecar";
pub const VOLUME_NAME: &str = "sigil-jwks";
/// The port name a Service targets (`targetPort: sigil-http`).
pub const PORT_NAME: &str = "sigil-http";
pub const ADMIN_PORT_NAME: &str = "sigil-admin";
pub const DEFAULT_PROXY_PORT: u16 = 8000;
pub const DEFAULT_ADMIN_PORT: u16 = 9091;
const JWKS_DIR: &str = "/etc/sigil/jwks";
/// The UID the images run as.
const SIDECAR_UID: i64 = 65532;

/// What the operator's flags fix for every injected sidecar.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub image: String,
    pub image_pull_policy: String,
    /// The `iss` every sidecar requires: the issuer's URL, byte for byte.
    pub issuer: String,
    /// The SigningKey used when a Pod names none.
    pub signing_key: Option<KeyRef>,
    pub resources: ResourceRequirements,
}

/// A SigningKey by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    pub namespace: String,
    pub name: String,
}

impl KeyRef {
    /// `<namespace>/<name>`, or `<name>` in `default_namespace`.
    pub fn parse(value: &str, default_namespace: &str) -> Result<KeyRef, String> {
        let (namespace, name) = value.split_once('/').unwrap_or((default_namespace, value));
        for part in [namespace, name] {
            if !is_dns_name(part) {
                return Err(format!("{value:?} is not <namespace>/<name> or <name> of a SigningKey"));
            }
        }
        Ok(KeyRef { namespace: namespace.to_owned(), name: name.to_owned() })
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What the webhook learnt from the SigningKey.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The JWKS ConfigMap in the Pod's namespace: the source in the
    /// SigningKey's own namespace, its distributed copy elsewhere.
    pub config_map: String,
    pub algorithm: Algorithm,
    pub max_token_lifetime: Duration,
}

/// Why a Pod cannot be injected; the message goes back to whoever created it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("annotation {annotation}: {reason}")]
    Annotation { annotation: &'static str, reason: String },
    #[error("annotation {0} is required on pods labelled {LABEL_INJECT}={INJECT_ENABLED}")]
    Missing(&'static str),
    #[error(
        "no SigningKey named: set annotation {ANNOTATION_SIGNING_KEY} to <namespace>/<name> (the operator has no default)"
    )]
    NoSigningKey,
    #[error("container {0:?} is not an init container Sigil added; rename it, or remove the {LABEL_INJECT} label")]
    NameTaken(String),
    #[error("port {port} is already used by container {container:?}; set annotation {annotation} to a free port")]
    PortTaken { port: u16, container: String, annotation: &'static str },
}

/// The SigningKey a Pod asks for, before anything is read.
pub fn signing_key(pod: &Pod, namespace: &str, defaults: &Defaults) -> Result<KeyRef, InjectError> {
    match annotation(pod, ANNOTATION_SIGNING_KEY) {
        Some(value) => KeyRef::parse(value, namespace)
            .map_err(|reason| InjectError::Annotation { annotation: ANNOTATION_SIGNING_KEY, reason }),
        None => defaults.signing_key.clone().ok_or(InjectError::NoSigningKey),
    }
}

/// The Pod with the sidecar injected.
pub fn inject(pod: &Pod, defaults: &Defaults, keys: &Keys) -> Result<Pod, InjectError> {
    let mut pod = pod.clone();
    let wants = Wants::read(&pod)?;
    let spec = pod.spec.get_or_insert_with(Default::default);
    if let Some(c) = spec.containers.iter().find(|c| c.name == CONTAINER_NAME) {
        return Err(InjectError::NameTaken(c.name.clone()));
    }
    // Injected before (or by an older operator): start again from scratch.
    let init = spec.init_containers.get_or_insert_with(Vec::new);
    init.retain(|c| c.name != CONTAINER_NAME);
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.name != VOLUME_NAME);
    }

    let upstream = wants.upstream_port(&spec.containers)?;
    for (port, annotation) in [(wants.proxy_port, ANNOTATION_PROXY_PORT), (wants.admin_port, ANNOTATION_ADMIN_PORT)] {
        let app_ports = spec
            .containers
            .iter()
            .chain(init.iter())
            .flat_map(|c| c.ports.iter().flatten().map(move |p| (i64::from(p.container_port), c.name.as_str())));
        let used = std::iter::once((i64::from(upstream), "the app (upstream-port)")).chain(app_ports);
        if let Some((_, container)) = used.into_iter().find(|(p, _)| *p == i64::from(port)) {
            return Err(InjectError::PortTaken { port, container: container.to_owned(), annotation });
        }
    }
    if wants.proxy_port == wants.admin_port {
        return Err(InjectError::PortTaken {
            port: wants.admin_port,
            container: CONTAINER_NAME.to_owned(),
            annotation: ANNOTATION_ADMIN_PORT,
        });
    }

    init.insert(0, sidecar(defaults, keys, &wants, upstream));
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: VOLUME_NAME.to_owned(),
        config_map: Some(ConfigMapVolumeSource { name: keys.config_map.clone(), ..Default::default() }),
        ..Default::default()
    });
    Ok(pod)
}

/// The per-app settings, read from the Pod's annotations and checked.
struct Wants {
    audiences: Vec<String>,
    upstream: String,
    public_paths: Vec<String>,
    scope_rules: Vec<String>,
    proxy_port: u16,
    admin_port: u16,
}

impl Wants {
    fn read(pod: &Pod) -> Result<Wants, InjectError> {
        let required = |name| annotation(pod, name).ok_or(InjectError::Missing(name));
        let audiences = list(required(ANNOTATION_AUDIENCE)?, ',');
        if audiences.is_empty() {
            return Err(InjectError::Missing(ANNOTATION_AUDIENCE));
        }
        check_each(ANNOTATION_AUDIENCE, &audiences, |a| {
            if a.chars().all(|c| c.is_ascii_graphic()) { Ok(()) } else { Err("is not printable ASCII") }
        })?;
        let public_paths = list(annotation(pod, ANNOTATION_PUBLIC_PATHS).unwrap_or(""), ',');
        check_each(ANNOTATION_PUBLIC_PATHS, &public_paths, path_prefix)?;
        let scope_rules = list(annotation(pod, ANNOTATION_REQUIRE_SCOPES).unwrap_or(""), ' ');
        check_each(ANNOTATION_REQUIRE_SCOPES, &scope_rules, |rule| {
            let (prefix, scopes) = rule.split_once('=').ok_or("is not PREFIX=SCOPE[,SCOPE]")?;
            path_prefix(prefix)?;
            if scopes
                .split(',')
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'))
            {
                Ok(())
            } else {
                Err("has an empty or invalid scope (RFC 6749 3.3)")
            }
        })?;
        Ok(Wants {
            audiences,
            upstream: required(ANNOTATION_UPSTREAM_PORT)?.trim().to_owned(),
            public_paths,
            scope_rules,
            proxy_port: port(pod, ANNOTATION_PROXY_PORT, DEFAULT_PROXY_PORT)?,
            admin_port: port(pod, ANNOTATION_ADMIN_PORT, DEFAULT_ADMIN_PORT)?,
        })
    }

    /// The upstream port as a number: given, or looked up by name among the
    /// app's container ports.
    fn upstream_port(&self, containers: &[Container]) -> Result<u16, InjectError> {
        let err = |reason: String| InjectError::Annotation { annotation: ANNOTATION_UPSTREAM_PORT, reason };
        if self.upstream.bytes().all(|b| b.is_ascii_digit()) {
            return match self.upstream.parse::<u16>() {
                Ok(p) if p > 0 => Ok(p),
                _ => Err(err(format!("{:?} is not a port (1-65535)", self.upstream))),
            };
        }
        containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(self.upstream.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| err(format!("no container declares a port named {:?}", self.upstream)))
    }
}

fn sidecar(defaults: &Defaults, keys: &Keys, wants: &Wants, upstream: u16) -> Container {
    let mut args = vec![
        format!("--listen=0.0.0.0:{}", wants.proxy_port),
        format!("--upstream=http://127.0.0.1:{upstream}"),
        format!("--admin-listen=0.0.0.0:{}", wants.admin_port),
        format!("--jwks-file={JWKS_DIR}/jwks.json"),
        format!("--issuer={}", defaults.issuer),
        // The SigningKey signs with one algorithm; accept no other (RFC 8725 3.1).
        format!("--algorithms={}", keys.algorithm.as_str()),
        format!("--max-token-lifetime={}", sigil_api::duration::format(keys.max_token_lifetime)),
    ];
    args.extend(wants.audiences.iter().map(|a| format!("--audience={a}")));
    args.extend(wants.public_paths.iter().map(|p| format!("--public-path={p}")));
    args.extend(wants.scope_rules.iter().map(|r| format!("--require-scope={r}")));
    let probe = |path: &str, period, failures| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_owned()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(defaults.image.clone()),
        image_pull_policy: Some(defaults.image_pull_policy.clone()),
        // A native sidecar: runs beside the app for the Pod's whole life.
        restart_policy: Some("Always".to_owned()),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some(PORT_NAME.to_owned()),
                container_port: i32::from(wants.proxy_port),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
            ContainerPort {
                name: Some(ADMIN_PORT_NAME.to_owned()),
                container_port: i32::from(wants.admin_port),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            },
        ]),
        // The app starts only once the keys are loaded.
        startup_probe: Some(probe("/readyz", 1, 120)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(defaults.resources.clone()),
        // Pod Security "restricted", whatever the Pod itself sets.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(SIDECAR_UID),
            run_as_group: Some(SIDECAR_UID),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: VOLUME_NAME.to_owned(),
            mount_path: JWKS_DIR.to_owned(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn annotation<'p>(pod: &'p Pod, name: &str) -> Option<&'p str> {
    pod.metadata.annotations.as_ref().and_then(|a: &BTreeMap<String, String>| a.get(name)).map(String::as_str)
}

fn list(value: &str, separator: char) -> Vec<String> {
    value.split(separator).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn check_each(
    annotation: &'static str,
    values: &[String],
    check: impl Fn(&str) -> Result<(), &'static str>,
) -> Result<(), InjectError> {
    for value in values {
        check(value).map_err(|why| InjectError::Annotation { annotation, reason: format!("{value:?} {why}") })?;
    }
    Ok(())
}

/// The sidecar normalises and checks prefixes fully at start-up; refusing
/// the obvious mistakes here shows them to whoever created the Pod instead
/// of in a crash-looping container.
fn path_prefix(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("does not start with /");
    }
    if !p.chars().all(|c| c.is_ascii_graphic()) {
        return Err("has spaces, control or non-ASCII characters");
    }
    Ok(())
}

fn port(pod: &Pod, name: &'static str, default: u16) -> Result<u16, InjectError> {
    match annotation(pod, name) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(InjectError::Annotation { annotation: name, reason: format!("{v:?} is not a port (1-65535)") }),
        },
    }
}

/// An RFC 1123 label: what namespace and SigningKey names are.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests;
