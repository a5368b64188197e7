//! Shutdown in the order orchestrators and load balancers expect. On the first SIGTERM/SIGINT every health service
//! (the server `""`, each gRPC service, each model) turns NOT_SERVING and ServerReady/ModelReady turn false at once,
//! while the listener keeps accepting and serving for the grace period — long enough for a readiness probe or a load
//! balancer's health check to take the replica out of rotation before any connection is refused. Then the listener
//! stops accepting, open connections are told to go away (HTTP/2 GOAWAY), health `Watch` streams end, and in-flight
//! requests get up to the drain timeout to finish. A second signal ends the process at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use super::accounting::Calls;
use crate::error::ServeError;
use crate::state::Shared;

/// Process exit status after the in-flight requests finished within the drain timeout.
pub const EXIT_DRAINED: u8 = 0;
/// Process exit status when the drain timeout ran out with requests still running (they are abandoned).
pub const EXIT_DRAIN_TIMEOUT: u8 = 3;
/// Process exit status when a second signal cut the drain short (running requests are abandoned).
pub const EXIT_INTERRUPTED: u8 = 4;

/// How a served process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every in-flight request finished.
    Drained,
    /// The drain timeout ran out; this many calls were abandoned.
    TimedOut {
        /// Calls still running.
        abandoned: usize,
    },
    /// A second signal arrived during the drain; this many calls were abandoned.
    Interrupted {
        /// Calls still running.
        abandoned: usize,
    },
}

impl Exit {
    /// The process exit status ([`EXIT_DRAINED`], [`EXIT_DRAIN_TIMEOUT`] or [`EXIT_INTERRUPTED`]).
    pub fn code(&self) -> u8 {
        match self {
            Exit::Drained => EXIT_DRAINED,
            Exit::TimedOut { .. } => EXIT_DRAIN_TIMEOUT,
            Exit::Interrupted { .. } => EXIT_INTERRUPTED,
        }
    }
}

/// Everything the drain acts on.
pub struct Drain {
    /// Keep accepting this long after the first signal.
    pub grace: Duration,
    /// Then wait this long for in-flight requests.
    pub timeout: Duration,
    /// Health statuses to turn NOT_SERVING.
    pub health: HealthReporter,
    /// Every health service name, `""` included.
    pub services: Vec<String>,
    /// Readiness for ServerReady/ModelReady.
    pub shared: Arc<Shared>,
    /// The running calls.
    pub calls: Arc<Calls>,
    /// Set to true to make the gRPC server stop accepting and drain its connections.
    pub stop: watch::Sender<bool>,
}

/// The next signal; never resolves once the sender is gone.
async fn next_signal(signals: &mut mpsc::Receiver<()>) {
    if signals.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

fn server_error(e: impl std::fmt::Display) -> ServeError {
    ServeError::Internal(format!("gRPC server: {e}"))
}

impl Drain {
    /// Drive `serve` (the gRPC server, which stops accepting once `stop` is set) through the whole life cycle:
    /// serve until the first signal, then grace, then drain.
    pub async fn run<E: std::fmt::Display>(
        self,
        serve: impl Future<Output = Result<(), E>>,
        signals: &mut mpsc::Receiver<()>,
    ) -> Result<Exit, ServeError> {
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => return Err(server_error(r.err().map_or_else(|| "stopped before any signal".to_string(), |e| e.to_string()))),
            _ = next_signal(signals) => {}
        }
        self.shared.start_draining();
        for s in &self.services {
            self.health
                .set_service_status(s, ServingStatus::NotServing)
                .await;
        }
        tracing::info!(
            grace_seconds = self.grace.as_secs_f64(),
            timeout_seconds = self.timeout.as_secs_f64(),
            "shutdown requested: health NOT_SERVING, still accepting during the grace period"
        );
        tokio::select! {
            r = &mut serve => return Err(server_error(r.err().map_or_else(|| "stopped during the grace period".to_string(), |e| e.to_string()))),
            _ = tokio::time::sleep(self.grace) => {}
            _ = next_signal(signals) => return Ok(self.abandon(true)),
        }
        tracing::info!(
            running = self.calls.running().len(),
            "grace period over: no longer accepting, draining in-flight requests"
        );
        let _ = self.stop.send(true);
        self.calls.close_watches();
        tokio::select! {
            r = &mut serve => {
                r.map_err(server_error)?;
                tracing::info!("drained; exiting");
                Ok(Exit::Drained)
            }
            _ = tokio::time::sleep(self.timeout) => Ok(self.abandon(false)),
            _ = next_signal(signals) => Ok(self.abandon(true)),
        }
    }

    /// Log every call still running as abandoned.
    fn abandon(&self, interrupted: bool) -> Exit {
        let running = self.calls.running();
        let why = if interrupted {
            "second signal"
        } else {
            "drain timeout"
        };
        for c in &running {
            tracing::error!(service = %c.service, method = %c.method, model = %c.model(), running_seconds = c.seconds(), reason = why, "request abandoned");
        }
        let abandoned = running.len();
        let exit = if interrupted {
            Exit::Interrupted { abandoned }
        } else {
            Exit::TimedOut { abandoned }
        };
        tracing::error!(
            abandoned,
            reason = why,
            exit_code = exit.code(),
            drain_timeout_seconds = self.timeout.as_secs_f64(),
            "exiting without finishing every request"
        );
        exit
    }
}
