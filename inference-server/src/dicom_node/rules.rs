//! Routing rules and destinations of the `[dicom]` section: `[[dicom.route]]` (which model segments which series)
//! and `[[dicom.destination]]` (where SEGs go: DIMSE C-STORE or STOW-RS), as written and validated.

use std::path::PathBuf;

use serde::Deserialize;

use super::config::{ae_title, cerr, existing, positive};
use crate::config::ConfigError;

/// One `[[dicom.route]]` rule as written; every given criterion must hold (lists: any of their values).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    model: String,
    #[serde(default)]
    modality: Vec<String>,
    #[serde(default)]
    body_part: Vec<String>,
    series_description: Option<String>,
    #[serde(default)]
    calling_ae: Vec<String>,
    #[serde(default)]
    destinations: Vec<String>,
}

/// How a destination receives SEGs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    /// DIMSE C-STORE (this node is the SCU).
    Dimse,
    /// DICOMweb STOW-RS (HTTP POST of a multipart/related body).
    Stow,
}

/// One `[[dicom.destination]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationFile {
    name: String,
    kind: DestinationKind,
    host: Option<String>,
    port: Option<u16>,
    ae_title: Option<String>,
    url: Option<String>,
    #[serde(default)]
    tls: bool,
    ca: Option<PathBuf>,
    token_file: Option<PathBuf>,
}

/// A SeriesDescription pattern (a regular expression, unanchored).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A validated routing rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Model that segments the series.
    pub model: String,
    /// Modality values (upper case); empty = any.
    pub modality: Vec<String>,
    /// BodyPartExamined values (upper case); empty = any.
    pub body_part: Vec<String>,
    /// SeriesDescription pattern; None = any.
    pub series_description: Option<Pattern>,
    /// Calling AE titles; empty = any.
    pub calling_ae: Vec<String>,
    /// Destination names (all destinations when the rule names none).
    pub destinations: Vec<String>,
}

/// Where a destination is and how it is reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// DIMSE C-STORE to `ae_title@host:port`.
    Dimse {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
        /// Called AE title.
        ae_title: String,
        /// DICOM TLS with this CA bundle (PEM), if set.
        tls_ca: Option<PathBuf>,
    },
    /// STOW-RS to `url` (`…/studies` is appended).
    Stow {
        /// Base URL of the DICOMweb service (http or https).
        url: String,
        /// CA bundle (PEM) for https.
        ca: Option<PathBuf>,
        /// File holding a bearer token.
        token_file: Option<PathBuf>,
    },
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// Name used by routes, logs and metrics.
    pub name: String,
    /// How to reach it.
    pub target: Target,
}

fn upper(v: Vec<String>) -> Vec<String> {
    v.into_iter()
        .map(|s| s.trim().to_ascii_uppercase())
        .collect()
}

pub(super) fn destination(d: DestinationFile) -> Result<Destination, ConfigError> {
    let field = format!("dicom.destination `{}`", d.name);
    if d.name.is_empty()
        || !d
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(cerr(
            &field,
            "name must be non-empty letters, digits, '-' or '_'",
        ));
    }
    let target = match d.kind {
        DestinationKind::Dimse => {
            if d.url.is_some() || d.token_file.is_some() {
                return Err(cerr(&field, "url and token_file belong to kind = \"stow\""));
            }
            let (Some(host), Some(port), Some(ae)) = (d.host, d.port, d.ae_title) else {
                return Err(cerr(
                    &field,
                    "kind = \"dimse\" needs host, port and ae_title",
                ));
            };
            if d.ca.is_some() && !d.tls {
                return Err(cerr(&field, "ca is only used with tls = true"));
            }
            Target::Dimse {
                host,
                port: positive(&field, port)?,
                ae_title: ae_title(&field, &ae)?,
                tls_ca: if d.tls {
                    Some(
                        existing(&field, d.ca)?
                            .ok_or_else(|| cerr(&field, "tls = true needs ca (PEM)"))?,
                    )
                } else {
                    None
                },
            }
        }
        DestinationKind::Stow => {
            if d.host.is_some() || d.port.is_some() || d.ae_title.is_some() || d.tls {
                return Err(cerr(
                    &field,
                    "host, port, ae_title and tls belong to kind = \"dimse\" (STOW uses url)",
                ));
            }
            let url = d
                .url
                .ok_or_else(|| cerr(&field, "kind = \"stow\" needs url"))?;
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| cerr(&field, format!("url {url:?}: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(cerr(
                    &field,
                    format!("url {url:?}: expected http://host[:port]/path or https://…"),
                ));
            }
            if uri.scheme_str() == Some("https") && d.ca.is_none() {
                return Err(cerr(
                    &field,
                    "https urls need ca (PEM bundle of the server's CA)",
                ));
            }
            Target::Stow {
                url: url.trim_end_matches('/').to_string(),
                ca: existing(&field, d.ca)?,
                token_file: existing(&field, d.token_file)?,
            }
        }
    };
    Ok(Destination {
        name: d.name,
        target,
    })
}

pub(super) fn route(
    r: RouteFile,
    destinations: &[Destination],
    i: usize,
) -> Result<Route, ConfigError> {
    let field = format!("dicom.route[{i}]");
    if r.model.is_empty() {
        return Err(cerr(&field, "model is required"));
    }
    for d in &r.destinations {
        if !destinations.iter().any(|x| &x.name == d) {
            return Err(cerr(
                &field,
                format!("destination {d:?} is not defined in [[dicom.destination]]"),
            ));
        }
    }
    let series_description = r
        .series_description
        .map(|p| {
            regex::Regex::new(&p)
                .map(Pattern)
                .map_err(|e| cerr(&field, format!("series_description {p:?}: {e}")))
        })
        .transpose()?;
    let calling_ae = r
        .calling_ae
        .iter()
        .map(|a| ae_title(&field, a))
        .collect::<Result<Vec<_>, _>>()?;
    let destinations = if r.destinations.is_empty() {
        destinations.iter().map(|d| d.name.clone()).collect()
    } else {
        r.destinations
    };
    Ok(Route {
        model: r.model,
        modality: upper(r.modality),
        body_part: upper(r.body_part),
        series_description,
        calling_ae,
        destinations,
    })
}
