use std::process::ExitCode;

use clap::Parser;
use sigil_sidecar::config::Args;

// Proxy traffic runs on worker threads of its own (see `server`); this
// runtime only carries key sources, the admin port and shutdown.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    sigil_runtime::telemetry::init(args.log_format);
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("sigil-sidecar: {e}");
            return ExitCode::from(2);
        }
    };
    match sigil_sidecar::run::start(config, sigil_runtime::shutdown::signal()).await {
        Ok(running) => {
            let _ = running.done.await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "sidecar failed to start");
            ExitCode::FAILURE
        }
    }
}
