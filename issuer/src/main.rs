use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Parser;
use sigil_issuer::config::{Cli, Command, ServeArgs};
use sigil_issuer::{Error, Result, password, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::HashSecret) => hash_secret(),
        None => {
            sigil_runtime::telemetry::init(cli.serve.log_format);
            run(cli.serve)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sigil-issuer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Validates and loads everything before binding a port, then serves until SIGTERM.
fn run(args: ServeArgs) -> Result<()> {
    let config = args.validate()?;
    let runtime =
        tokio::runtime::Runtime::new().map_err(|source| Error::Io { what: "starting the async runtime", source })?;
    runtime.block_on(async {
        let (state, registry) = server::prepare(&config)?;
        let listener = server::bind(config.listen).await?;
        let admin = server::bind(config.admin_listen).await?;
        tracing::info!(listen = %config.listen, admin = %config.admin_listen, issuer = %config.issuer_url, "serving");
        server::serve(&config, state, registry, listener, admin, sigil_runtime::shutdown::signal()).await
    })
}

/// `sigil-issuer hash-secret`: the secret on stdin, its Argon2id PHC string on stdout.
fn hash_secret() -> Result<()> {
    let mut input = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin().read_to_end(&mut input).map_err(|source| Error::Io { what: "reading stdin", source })?;
    let hash = password::hash_input(&input).map_err(Error::Input)?;
    writeln!(std::io::stdout(), "{}", hash.as_str()).map_err(|source| Error::Io { what: "writing stdout", source })
}
