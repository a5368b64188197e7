//! `medmae-serve`: the gRPC inference server. Prints one line `medmae-serve listening grpc=ADDR metrics=ADDR` on
//! stdout once ready; logs go to stderr.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use server::config::{ServeArgs, ServerConfig};

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

fn main() -> ExitCode {
    let cfg = match ServerConfig::resolve(ServeArgs::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("medmae-serve: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEDMAE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.json_logs {
        fmt.json().init();
    } else {
        fmt.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medmae-serve: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(server::server::run(cfg, shutdown_signal(), |b| {
        let metrics = b
            .metrics
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        println!("medmae-serve listening grpc={} metrics={metrics}", b.grpc);
        let _ = std::io::stdout().flush();
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "medmae-serve stopped");
            eprintln!("medmae-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
