use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use sigil_issuer::config::{Cli, Command};
use sigil_issuer::{password, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::HashSecret) = cli.command {
        return hash_secret();
    }
    sigil_runtime::telemetry::init(cli.serve.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async {
        // Everything is validated and loaded before a port is bound.
        let config = match cli.serve.validate() {
            Ok(c) => c,
            Err(e) => return fail(&e.to_string()),
        };
        let (state, registry) = match server::prepare(&config) {
            Ok(s) => s,
            Err(e) => return fail(&e.to_string()),
        };
        let listeners = async { Ok((server::bind(config.listen).await?, server::bind(config.admin_listen).await?)) };
        let (listener, admin) = match listeners.await {
            Ok(l) => l,
            Err(e) => return fail(&sigil_issuer::Error::to_string(&e)),
        };
        tracing::info!(listen = %config.listen, admin = %config.admin_listen, issuer = %config.issuer_url, "serving");
        match server::serve(&config, state, registry, listener, admin, sigil_runtime::shutdown::signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        }
    })
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("sigil-issuer: {message}");
    ExitCode::FAILURE
}

/// `sigil-issuer hash-secret`: stdin (one trailing newline dropped) to an Argon2id PHC string.
fn hash_secret() -> ExitCode {
    let mut input = zeroize::Zeroizing::new(Vec::new());
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("sigil-issuer: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let mut secret: &[u8] = &input;
    secret = secret.strip_suffix(b"\n").unwrap_or(secret);
    secret = secret.strip_suffix(b"\r").unwrap_or(secret);
    if secret.is_empty() {
        eprintln!(
            "sigil-issuer: empty secret on stdin; pipe the secret in, e.g. `printf %s \"$SECRET\" | sigil-issuer hash-secret`"
        );
        return ExitCode::FAILURE;
    }
    match password::hash(secret) {
        Ok(hash) => {
            let _ = writeln!(std::io::stdout(), "{}", hash.as_str());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sigil-issuer: {e}");
            ExitCode::FAILURE
        }
    }
}
