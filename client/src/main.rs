//! `medmae-client`: segment a volume or a DICOM series on a medmae-serve, check health, list models.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use client::{resolve_input, Client, ClientOptions, SegmentParams};
use indicatif::{ProgressBar, ProgressStyle};
use protocol::medmae_v1::OutputFormat;

#[derive(Debug, Parser)]
#[command(name = "medmae-client", version, about = "Client for medmae-serve")]
struct Cli {
    /// Server URL (https:// or --ca-cert enables TLS).
    #[arg(long, env = "MEDMAE_SERVER", default_value = "http://127.0.0.1:8001")]
    server: String,
    /// File holding the bearer token (first non-comment line).
    #[arg(long, env = "MEDMAE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) that signed the server certificate.
    #[arg(long, env = "MEDMAE_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "MEDMAE_CLIENT_CERT")]
    client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "MEDMAE_CLIENT_KEY")]
    client_key: Option<PathBuf>,
    /// TLS server name to verify instead of the URL host.
    #[arg(long)]
    domain: Option<String>,
    /// Largest segmentation result (mask + probabilities, bytes) to accept from the server; 0 = 8 GiB.
    #[arg(long, default_value_t = 0)]
    max_result_bytes: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Segment a NIfTI (.nii, .nii.gz) or MetaImage (.mha) volume, or a DICOM series (a directory, a .zip or a .dcm
    /// file); writes the label map as NIfTI (`-o x.nii.gz`) or DICOM SEG (`-o x.dcm`).
    Segment {
        /// Input volume, DICOM series directory, .zip of a series, or DICOM file.
        input: PathBuf,
        /// Output label map: .nii.gz / .nii (NIfTI) or .dcm (DICOM SEG, DICOM input only); other extensions are
        /// refused.
        #[arg(short, long)]
        output: PathBuf,
        /// DICOM input holding several series: the SeriesInstanceUID (or SeriesNumber) to segment.
        #[arg(long)]
        series: Option<String>,
        /// DICOM SEG output: replace patient/study identification (name, ID, birth date, accession, ...) with
        /// placeholders.
        #[arg(long)]
        anonymize: bool,
        /// Model name (default: the server's only segmentation model).
        #[arg(long, default_value = "")]
        model: String,
        /// Also write the class probabilities (.nii.gz or .nii, float32, one channel per class).
        #[arg(long)]
        probabilities: Option<PathBuf>,
        /// Print the summary as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Health of the server or one service/model.
    Health {
        /// Service or model name ("" = the whole server).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// List the server's models.
    Models,
}

fn token(path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let Some(p) = path else { return Ok(None) };
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading token file {}", p.display()))?;
    let t = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .with_context(|| format!("{} holds no token", p.display()))?;
    Ok(Some(t.to_string()))
}

/// The label-map format to ask for and whether to decompress it, from an output file name (`.nii.gz`, `.nii`, or
/// `.dcm` where `seg_allowed`); any other name is refused before anything is sent.
fn output_format(path: &Path, seg_allowed: bool) -> anyhow::Result<(OutputFormat, bool)> {
    let name = path.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".nii.gz") {
        Ok((OutputFormat::NiftiGz, false))
    } else if name.ends_with(".nii") {
        Ok((OutputFormat::NiftiGz, true))
    } else if seg_allowed && name.ends_with(".dcm") {
        Ok((OutputFormat::DicomSeg, false))
    } else {
        anyhow::bail!(
            "{}: expected a name ending in .nii.gz or .nii{}",
            path.display(),
            if seg_allowed {
                ", or .dcm for a DICOM SEG"
            } else {
                ""
            }
        )
    }
}

/// Decompress a gzip stream (a `.nii.gz` the server sent, for a `.nii` output).
fn gunzip_bytes(gz: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut raw)?;
    Ok(raw)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = ClientOptions {
        server: cli.server.clone(),
        token: token(&cli.token_file)?,
        ca_cert: cli.ca_cert,
        client_cert: cli.client_cert,
        client_key: cli.client_key,
        domain: cli.domain,
        max_message_bytes: 0,
        max_result_bytes: cli.max_result_bytes,
    };
    match cli.command {
        Command::Health { service } => {
            let client = Client::connect(&opts).await?;
            let s = client.health(&service).await?;
            println!("{s}");
            anyhow::ensure!(
                s == "SERVING",
                "{} is {s}",
                if service.is_empty() {
                    "server"
                } else {
                    &service
                }
            );
        }
        Command::Models => {
            let client = Client::connect(&opts).await?;
            for m in client.list_models().await? {
                println!(
                    "{}\tversion {}\t{}\t{}-D roi {:?}\tin {} out {}\tlabels {:?}{}",
                    m.name,
                    m.version,
                    m.kind,
                    m.spatial_dims,
                    m.roi_size,
                    m.in_channels,
                    m.out_channels,
                    m.labels,
                    if m.inference_json.is_empty() {
                        ""
                    } else {
                        "\tsegmentation"
                    }
                );
            }
        }
        Command::Segment {
            input,
            output,
            series,
            anonymize,
            model,
            probabilities,
            json,
            quiet,
        } => {
            let bar = if quiet {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(0)
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "upload {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            // Everything about the input and the output names is checked before connecting.
            let (upload, series_uid) = resolve_input(&input, series.as_deref())?;
            let (format, gunzip) = output_format(&output, true)?;
            let probabilities_gunzip = match &probabilities {
                Some(p) => output_format(p, false)?.1,
                None => false,
            };
            let client = Client::connect(&opts).await?;
            let params = SegmentParams {
                model,
                probabilities: probabilities.is_some(),
                output: format,
                series: series_uid,
                anonymize,
            };
            let b = bar.clone();
            let r = client
                .segment_input(&upload, &params, move |sent, total| {
                    b.set_length(total);
                    b.set_position(sent);
                    if sent == total {
                        b.set_message("segmenting");
                    }
                })
                .await?;
            bar.finish_and_clear();
            let mask = if gunzip && r.summary.mask_format == OutputFormat::NiftiGz as i32 {
                gunzip_bytes(&r.mask).context("decompressing the label NIfTI")?
            } else {
                r.mask
            };
            // The probabilities first: a failure leaves no file behind, and the mask is written last.
            if let Some(p) = &probabilities {
                let bytes = r.probabilities.as_deref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "the server returned no probabilities for --probabilities {}",
                        p.display()
                    )
                })?;
                let bytes = if probabilities_gunzip {
                    gunzip_bytes(bytes).context("decompressing the probabilities NIfTI")?
                } else {
                    bytes.to_vec()
                };
                imaging::io::write_file_atomic(p, &bytes)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            if let Err(e) = imaging::io::write_file_atomic(&output, &mask) {
                if let Some(p) = &probabilities {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e).with_context(|| format!("writing {}", output.display()));
            }
            let s = &r.summary;
            if json {
                let labels: Vec<serde_json::Value> = s.labels.iter().map(|l| serde_json::json!({"value": l.value, "name": l.name, "voxels": l.voxels, "volume_ml": l.volume_ml})).collect();
                println!(
                    "{}",
                    serde_json::json!({"model": s.model_name, "version": s.model_version, "shape": s.shape, "spacing": s.spacing, "windows": s.windows, "inference_seconds": s.inference_seconds, "labels": labels, "mask_format": mask_format(s.mask_format), "series_uid": s.series_uid, "slices": s.slices})
                );
            } else {
                println!(
                    "model {} v{}: shape {:?}, {} windows, {:.2} s; wrote {} ({})",
                    s.model_name,
                    s.model_version,
                    s.shape,
                    s.windows,
                    s.inference_seconds,
                    output.display(),
                    mask_format(s.mask_format)
                );
                if !s.series_uid.is_empty() {
                    println!("series {} ({} slices)", s.series_uid, s.slices);
                }
                println!(
                    "{:>5}  {:<20} {:>12} {:>12}",
                    "label", "name", "voxels", "ml"
                );
                for l in &s.labels {
                    println!(
                        "{:>5}  {:<20} {:>12} {:>12.3}",
                        l.value, l.name, l.voxels, l.volume_ml
                    );
                }
            }
        }
    }
    Ok(())
}

/// Name of a returned mask format.
fn mask_format(f: i32) -> &'static str {
    match OutputFormat::try_from(f) {
        Ok(OutputFormat::DicomSeg) => "dicom_seg",
        Ok(OutputFormat::NiftiGz) => "nifti_gz",
        _ => "unknown",
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("medmae-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medmae-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}
