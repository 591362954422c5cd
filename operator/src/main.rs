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
    sigil_runtime::telemetry::init(config.log_format);
    let admin = match tokio::net::TcpListener::bind(config.admin_listen).await {
        Ok(listener) => listener,
        Err(e) => return fail(&format!("cannot listen on {}: {e}", config.admin_listen)),
    };
    if config.min_pre_publish < sigil_operator::Limits::DEFAULT_MIN_PRE_PUBLISH {
        tracing::warn!(
            min_pre_publish = %sigil_api::duration::format(config.min_pre_publish),
            "--min-pre-publish is below the kubelet's propagation delay: a test setting, reported on every SigningKey"
        );
    }
    let limits = sigil_operator::Limits { min_pre_publish: config.min_pre_publish };
    let options = controller::Options { namespace: config.namespace, limits, lease, admin };
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
