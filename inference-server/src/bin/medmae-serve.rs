//! `medmae-serve`: the gRPC inference server (and optional DICOM node). Prints one line
//! `medmae-serve listening grpc=ADDR metrics=ADDR [dicom=ADDR]` on stdout once ready; logs go to stderr.
//! `medmae-serve queue …` manages the DICOM node's spool instead.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use server::config::{ServeArgs, ServeCommand, ServerConfig};

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

/// `medmae-serve queue …`: act on the spool and exit.
fn queue(args: &ServeArgs, q: &server::dicom_node::cli::QueueArgs) -> ExitCode {
    let result = ServerConfig::queue_spool(args)
        .map_err(|e| e.to_string())
        .and_then(|spool| {
            server::dicom_node::cli::run(&spool, &q.action).map_err(|e| e.to_string())
        });
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("medmae-serve queue: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = ServeArgs::parse();
    if let Some(ServeCommand::Queue(q)) = &args.command {
        return queue(&args, q);
    }
    let cfg = match ServerConfig::resolve(args) {
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
        let dicom = b.dicom.map(|a| format!(" dicom={a}")).unwrap_or_default();
        println!(
            "medmae-serve listening grpc={} metrics={metrics}{dicom}",
            b.grpc
        );
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
