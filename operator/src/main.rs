//! `sigil-operator`: flags, logging and the admin port, then the controller.

use std::process::ExitCode;

use clap::Parser;
use sigil_operator::config::{Command, Config};
use sigil_operator::controller;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Crd) = config.command {
        print!("{}", sigil_api::signing_key::crd_yaml());
        return ExitCode::SUCCESS;
    }
    // Every configuration error is reported before a port is bound.
    let lease = match config.lease(env) {
        Ok(lease) => lease,
        Err(message) => {
            eprintln!("sigil-operator: {message}");
            return ExitCode::from(2);
        }
    };
    let injection = match config.webhook.injection() {
        Ok(injection) => injection,
        Err(message) => {
            eprintln!("sigil-operator: {message}");
            return ExitCode::from(2);
        }
    };
    let secret_namespace = config.webhook.webhook_secret_namespace.clone().or_else(|| env("POD_NAMESPACE"));
    if injection.is_some() && secret_namespace.is_none() {
        eprintln!(
            "sigil-operator: the webhook needs a namespace for its certificate Secret: set --webhook-secret-namespace (or POD_NAMESPACE)"
        );
        return ExitCode::from(2);
    }
    sigil_runtime::telemetry::init(config.log_format);
    let admin = match tokio::net::TcpListener::bind(config.admin_listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.admin_listen)),
    };
    let webhook = match (injection, config.webhook.webhook_listen) {
        (Some(defaults), Some(addr)) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(controller::Webhook {
                listener,
                defaults,
                certificate: sigil_operator::webhook::cert::Target {
                    secret_namespace: secret_namespace.unwrap_or_default(),
                    secret_name: config.webhook.webhook_secret.clone(),
                    webhook_configuration: Some(config.webhook.webhook_configuration.clone()),
                    dns_names: config.webhook.webhook_dns_names.clone(),
                },
                manage_certificate: config.webhook.webhook_manage_certificate,
            }),
            Err(e) => return fail(&format!("cannot listen on {addr}: {e}")),
        },
        _ => None,
    };
    if config.min_pre_publish < sigil_operator::Limits::DEFAULT_MIN_PRE_PUBLISH {
        tracing::warn!(
            min_pre_publish = %sigil_api::duration::format(config.min_pre_publish),
            "--min-pre-publish is below the kubelet's propagation delay: a test setting, reported on every SigningKey"
        );
    }
    let limits = sigil_operator::Limits { min_pre_publish: config.min_pre_publish };
    let options = controller::Options { namespace: config.namespace, limits, lease, admin, webhook };
    match controller::run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

/// The environment, with the kernel's host name when $HOSTNAME is not exported.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().or_else(|| match name {
        "HOSTNAME" => std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()),
        _ => None,
    })
}
