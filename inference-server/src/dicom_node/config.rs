//! The `[dicom]` section of the server configuration file (plus `--dicom-listen`, `--dicom-ae-title`,
//! `--dicom-spool`), resolved once into the validated [`DicomConfig`]: listener, limits, spool, routing rules and
//! destinations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::rules::{destination, route, DestinationFile, RouteFile};
pub(super) use crate::config::cerr;
use crate::config::{seconds, ConfigError};

pub use super::rules::{Destination, DestinationKind, Pattern, Route, Target};

/// Default largest PDU this node receives (bytes): 128 KiB, dcmtk's upper default; larger PDUs are refused.
pub const DEFAULT_MAX_PDU: u32 = 131_072;

/// What happens to a completed series that no routing rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    /// Delete it (logged).
    #[default]
    Discard,
    /// Keep it under `unmatched/` in the spool (listed by `medmae-serve queue list`, re-routed by `queue retry`).
    Keep,
}

/// TLS files for the DICOM listener (DICOM TLS: the whole association runs inside TLS).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomTls {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA bundle (PEM) for client certificates; when set, peers without a valid certificate are refused.
    pub client_ca: Option<PathBuf>,
}

/// The `[dicom]` section as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DicomFile {
    listen: Option<SocketAddr>,
    ae_title: Option<String>,
    spool: Option<PathBuf>,
    allowed_calling_aes: Option<Vec<String>>,
    max_associations: Option<usize>,
    max_pdu: Option<u32>,
    association_timeout_seconds: Option<f64>,
    series_idle_seconds: Option<f64>,
    complete_on_release: Option<bool>,
    max_instances_per_series: Option<usize>,
    max_series_bytes: Option<u64>,
    spool_quota_bytes: Option<u64>,
    unmatched: Option<Unmatched>,
    send_attempts: Option<u32>,
    retry_initial_seconds: Option<f64>,
    retry_max_seconds: Option<f64>,
    tls: Option<DicomTls>,
    #[serde(default)]
    route: Vec<RouteFile>,
    #[serde(default)]
    destination: Vec<DestinationFile>,
}

impl DicomFile {
    /// The spool directory named in the file, if any (the queue CLI needs only this).
    pub fn spool(&self) -> Option<&PathBuf> {
        self.spool.as_ref()
    }
}

/// The flags that override the file.
#[derive(Debug, Clone, Default)]
pub struct DicomFlags {
    /// `--dicom-listen`.
    pub listen: Option<SocketAddr>,
    /// `--dicom-ae-title`.
    pub ae_title: Option<String>,
    /// `--dicom-spool`.
    pub spool: Option<PathBuf>,
    /// `--dicom-fault-pause` (crash tests only).
    pub fault_pause: Option<String>,
}

/// Delivery retry policy: exponential backoff from `initial`, capped at `max`, `attempts` tries in all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Tries per destination before the job fails.
    pub attempts: u32,
    /// First backoff.
    pub initial: Duration,
    /// Largest backoff.
    pub max: Duration,
}

impl Retry {
    /// The wait after the `attempt`-th failed try (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        self.initial.mul_f64(factor).min(self.max)
    }
}

/// A point where the node stops and waits to be killed (crash tests; `--dicom-fault-pause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPause {
    /// After the n-th instance is spooled, before its C-STORE response.
    Store(u64),
    /// After a job's segmentation, before its SEG is written to the spool.
    Inference,
    /// After a destination acknowledged a SEG, before the delivery is recorded.
    Sent,
}

impl FaultPause {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        let bad = || {
            cerr(
                "dicom_fault_pause",
                format!("expected store:N, inference or sent, got {s:?}"),
            )
        };
        match s.split_once(':') {
            Some(("store", n)) => n
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .map(Self::Store)
                .ok_or_else(bad),
            None if s == "inference" => Ok(Self::Inference),
            None if s == "sent" => Ok(Self::Sent),
            _ => Err(bad()),
        }
    }
}

/// The validated DICOM node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// This node's AE title (also the calling AE title when sending).
    pub ae_title: String,
    /// Spool directory.
    pub spool: PathBuf,
    /// Calling AE titles accepted (None = any).
    pub allowed_calling_aes: Option<Vec<String>>,
    /// Associations at once; more are rejected (transient, local limit exceeded).
    pub max_associations: usize,
    /// Largest PDU received.
    pub max_pdu: u32,
    /// Idle time after which an association is dropped (per PDU read or write).
    pub association_timeout: Duration,
    /// A series is complete after this long without a new instance.
    pub series_idle: Duration,
    /// A series is also complete when the association that sent it is released.
    pub complete_on_release: bool,
    /// Most instances in one series.
    pub max_instances_per_series: usize,
    /// Most bytes in one series (also the largest single instance).
    pub max_series_bytes: u64,
    /// Most bytes the spool may hold.
    pub spool_quota_bytes: u64,
    /// Unmatched series policy.
    pub unmatched: Unmatched,
    /// Delivery retries.
    pub retry: Retry,
    /// DICOM TLS for the listener.
    pub tls: Option<DicomTls>,
    /// Routing rules, first match wins.
    pub routes: Vec<Route>,
    /// Destinations by name.
    pub destinations: Vec<Destination>,
    /// Crash-test pause point.
    pub fault_pause: Option<FaultPause>,
}

/// Check an AE title: 1–16 characters of printable ASCII without backslash, not only spaces.
pub fn ae_title(field: &str, s: &str) -> Result<String, ConfigError> {
    let t = s.trim();
    if t.is_empty() || s.len() > 16 || !s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\') {
        return Err(cerr(
            field,
            format!("{s:?} is not an AE title (1 to 16 printable ASCII characters, no backslash)"),
        ));
    }
    Ok(t.to_string())
}

pub(super) fn positive<T: PartialOrd + Default + std::fmt::Display>(
    field: &str,
    v: T,
) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(cerr(field, format!("must be positive, got {v}")))
    }
}

pub(super) fn existing(field: &str, p: Option<PathBuf>) -> Result<Option<PathBuf>, ConfigError> {
    match p {
        Some(p) if !p.is_file() => Err(cerr(field, format!("{} is not a file", p.display()))),
        other => Ok(other),
    }
}

impl DicomConfig {
    /// Resolve flags over the file section; None when no listen address is configured (the node is off).
    pub fn resolve(
        flags: DicomFlags,
        file: Option<DicomFile>,
    ) -> Result<Option<Self>, ConfigError> {
        let f = file.unwrap_or_default();
        let Some(listen) = flags.listen.or(f.listen) else {
            return Ok(None);
        };
        let ae = ae_title(
            "dicom.ae_title",
            flags.ae_title.or(f.ae_title).as_deref().unwrap_or("MEDMAE"),
        )?;
        let spool = flags.spool.or(f.spool).ok_or_else(|| {
            cerr(
                "dicom.spool",
                "required with a DICOM listener (--dicom-spool DIR)",
            )
        })?;
        let allowed_calling_aes = f
            .allowed_calling_aes
            .map(|v| {
                v.iter()
                    .map(|a| ae_title("dicom.allowed_calling_aes", a))
                    .collect()
            })
            .transpose()?;
        let max_pdu = f.max_pdu.unwrap_or(DEFAULT_MAX_PDU);
        if !(4096..=(16 << 20)).contains(&max_pdu) {
            return Err(cerr(
                "dicom.max_pdu",
                format!("expected 4096..=16777216 bytes, got {max_pdu}"),
            ));
        }
        let retry = Retry {
            attempts: positive("dicom.send_attempts", f.send_attempts.unwrap_or(10))?,
            initial: seconds(
                "dicom.retry_initial_seconds",
                f.retry_initial_seconds.unwrap_or(2.0),
            )?,
            max: seconds(
                "dicom.retry_max_seconds",
                f.retry_max_seconds.unwrap_or(300.0),
            )?,
        };
        let tls = match f.tls {
            Some(t) => Some(DicomTls {
                cert: existing("dicom.tls.cert", Some(t.cert))?.unwrap_or_default(),
                key: existing("dicom.tls.key", Some(t.key))?.unwrap_or_default(),
                client_ca: existing("dicom.tls.client_ca", t.client_ca)?,
            }),
            None => None,
        };
        let destinations = f
            .destination
            .into_iter()
            .map(destination)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, d) in destinations.iter().enumerate() {
            if destinations[..i].iter().any(|x| x.name == d.name) {
                return Err(cerr(
                    "dicom.destination",
                    format!("name {:?} is used twice", d.name),
                ));
            }
        }
        let routes = f
            .route
            .into_iter()
            .enumerate()
            .map(|(i, r)| route(r, &destinations, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(Self {
            listen,
            ae_title: ae,
            spool,
            allowed_calling_aes,
            max_associations: positive("dicom.max_associations", f.max_associations.unwrap_or(16))?,
            max_pdu,
            association_timeout: seconds(
                "dicom.association_timeout_seconds",
                f.association_timeout_seconds.unwrap_or(60.0),
            )?,
            series_idle: seconds(
                "dicom.series_idle_seconds",
                f.series_idle_seconds.unwrap_or(30.0),
            )?,
            complete_on_release: f.complete_on_release.unwrap_or(false),
            max_instances_per_series: positive(
                "dicom.max_instances_per_series",
                f.max_instances_per_series.unwrap_or(5000),
            )?,
            max_series_bytes: positive(
                "dicom.max_series_bytes",
                f.max_series_bytes.unwrap_or(4 << 30),
            )?,
            spool_quota_bytes: positive(
                "dicom.spool_quota_bytes",
                f.spool_quota_bytes.unwrap_or(50 << 30),
            )?,
            unmatched: f.unmatched.unwrap_or_default(),
            retry,
            tls,
            routes,
            destinations,
            fault_pause: flags
                .fault_pause
                .as_deref()
                .map(FaultPause::parse)
                .transpose()?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> DicomFile {
        #[derive(Deserialize)]
        struct Wrap {
            dicom: DicomFile,
        }
        toml::from_str::<Wrap>(text).unwrap().dicom
    }

    #[test]
    fn resolves_routes_destinations_and_defaults() {
        let f = file(
            r#"
[dicom]
listen = "127.0.0.1:11112"
spool = "/tmp/spool"
allowed_calling_aes = ["ORTHANC"]
[[dicom.destination]]
name = "pacs"
kind = "dimse"
host = "127.0.0.1"
port = 4242
ae_title = "ORTHANC"
[[dicom.destination]]
name = "web"
kind = "stow"
url = "http://127.0.0.1:8042/dicom-web/"
[[dicom.route]]
model = "demo"
modality = ["ct"]
series_description = "(?i)head"
destinations = ["web"]
[[dicom.route]]
model = "other"
"#,
        );
        let c = DicomConfig::resolve(DicomFlags::default(), Some(f))
            .unwrap()
            .unwrap();
        assert_eq!(c.ae_title, "MEDMAE");
        assert_eq!(c.max_pdu, DEFAULT_MAX_PDU);
        assert_eq!(c.routes[0].modality, vec!["CT"]);
        assert_eq!(c.routes[0].destinations, vec!["web"]);
        assert_eq!(c.routes[1].destinations, vec!["pacs", "web"]);
        assert_eq!(
            c.destinations[1].target,
            Target::Stow {
                url: "http://127.0.0.1:8042/dicom-web".into(),
                ca: None,
                token_file: None
            }
        );
        let flags = DicomFlags {
            ae_title: Some("NODE".into()),
            fault_pause: Some("store:3".into()),
            ..Default::default()
        };
        let c = DicomConfig::resolve(
            flags,
            Some(file("[dicom]\nlisten = \"127.0.0.1:0\"\nspool = \"s\"\n")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.ae_title.as_str(), c.fault_pause),
            ("NODE", Some(FaultPause::Store(3)))
        );
        assert!(DicomConfig::resolve(DicomFlags::default(), None)
            .unwrap()
            .is_none());
    }

    #[test]
    fn errors_name_the_setting() {
        let e = |text: &str| {
            DicomConfig::resolve(DicomFlags::default(), Some(file(text)))
                .unwrap_err()
                .to_string()
        };
        let base = "[dicom]\nlisten = \"127.0.0.1:0\"\nspool = \"s\"\n";
        assert!(e("[dicom]\nlisten = \"127.0.0.1:0\"\n").contains("dicom.spool"));
        assert!(e(&format!("{base}ae_title = \"WAY-TOO-LONG-AE-TITLE\"\n")).contains("AE title"));
        assert!(e(&format!(
            "{base}[[dicom.route]]\nmodel = \"m\"\ndestinations = [\"x\"]\n"
        ))
        .contains("not defined"));
        assert!(e(&format!(
            "{base}[[dicom.route]]\nmodel = \"m\"\nseries_description = \"(\"\n"
        ))
        .contains("series_description"));
        assert!(e(&format!(
            "{base}[[dicom.destination]]\nname = \"p\"\nkind = \"dimse\"\nhost = \"h\"\n"
        ))
        .contains("needs host, port and ae_title"));
        assert!(e(&format!(
            "{base}[[dicom.destination]]\nname = \"w\"\nkind = \"stow\"\nurl = \"ftp://x/\"\n"
        ))
        .contains("expected http"));
        assert!(e(&format!("{base}max_pdu = 10\n")).contains("dicom.max_pdu"));
        assert!(toml::from_str::<toml::Value>(base).is_ok());
        let bad = DicomConfig::resolve(
            DicomFlags {
                fault_pause: Some("store:0".into()),
                ..Default::default()
            },
            Some(file(base)),
        );
        assert!(bad.unwrap_err().to_string().contains("store:N"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            attempts: 5,
            initial: Duration::from_secs(2),
            max: Duration::from_secs(10),
        };
        let b: Vec<u64> = (1..=5).map(|a| r.backoff(a).as_secs()).collect();
        assert_eq!(b, vec![2, 4, 8, 10, 10]);
    }
}
