//! `medmae-serve`: the gRPC inference server (and optional DICOM node). Prints one line
//! `medmae-serve listening grpc=ADDR metrics=ADDR [dicom=ADDR]` on stdout once ready; logs go to stderr.
//! `medmae-serve queue …` manages the DICOM node's spool instead.
//!
//! Exit status: 0 after a complete drain, 1 when the server fails (models, listeners, TLS, ...), 2 for a bad
//! configuration, 3 when the drain timeout abandoned running requests, 4 when a second signal did.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use server::config::{ServeArgs, ServeCommand, ServerConfig};
use tokio::sync::mpsc;

/// Forward every SIGTERM and SIGINT to the server (the first starts the drain, a second ends it at once). The
/// handlers are installed before this returns, so a signal that arrives during model loading is not lost.
#[cfg(unix)]
fn forward_signals() -> std::io::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Forward every Ctrl-C to the server.
#[cfg(not(unix))]
fn forward_signals() -> std::io::Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(rx)
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
    // Colour codes only on a terminal: a log file, the journal or a container log stays plain text.
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.json_logs {
        fmt.json().init();
    } else {
        fmt.init();
    }
    // Before any thread starts: engines' per-window tensors reuse freed memory instead of faulting it in again.
    let retention = server::ops::memory::keep_freed_memory();
    tracing::debug!(?retention, "allocator retention of freed memory");
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
    let result = rt.block_on(async {
        let signals = forward_signals().map_err(|e| {
            server::ServeError::Startup(format!("installing the signal handlers: {e}"))
        })?;
        server::server::run(cfg, signals, |b| {
            let metrics = b
                .metrics
                .map_or_else(|| "off".to_string(), |a| a.to_string());
            let dicom = b.dicom.map(|a| format!(" dicom={a}")).unwrap_or_default();
            println!(
                "medmae-serve listening grpc={} metrics={metrics}{dicom}",
                b.grpc
            );
            let _ = std::io::stdout().flush();
        })
        .await
    });
    // Requests abandoned by a drain timeout or a second signal may still hold worker threads: do not wait for them.
    rt.shutdown_background();
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            tracing::error!(error = %e, "medmae-serve stopped");
            eprintln!("medmae-serve: {e}");
            ExitCode::FAILURE
        }
    }
}
