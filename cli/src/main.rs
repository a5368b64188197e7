//! `medmae`: inspect and convert medical images (NIfTI, MetaImage, DICOM series).
//!
//! Never prints patient-identifying DICOM attributes: the imaging crate does not even read them.

mod compare;
mod info;
mod seg;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use imaging::io::{FileFormat, NiftiDtype};
use imaging::Volume;

/// Inspect and convert medical images: NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and DICOM series
/// (a directory, a .zip or a .dcm file).
#[derive(Debug, Parser)]
#[command(name = "medmae", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a volume's facts: format, shape, channels, dtype, spacing, origin, direction, RAS affine, axcodes,
    /// intensity statistics and, for integer images, label values and counts.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// DICOM: the SeriesInstanceUID (or SeriesNumber) to read when the input holds several series.
        #[arg(long)]
        series: Option<String>,
        /// Image file, DICOM directory, .zip or .dcm file.
        input: PathBuf,
    },
    /// List the DICOM series in a directory, .zip or file.
    Series {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// DICOM directory, .zip or .dcm file.
        input: PathBuf,
    },
    /// Convert between NIfTI, MetaImage and DICOM series (series -> volume); the output format follows OUT's
    /// extension (.nii, .nii.gz, .mha, .mhd).
    Convert {
        /// DICOM: the SeriesInstanceUID (or SeriesNumber) to read when the input holds several series.
        #[arg(long)]
        series: Option<String>,
        /// NIfTI output element type: auto (integer type when every value is an integer that fits), u8, i16, i32,
        /// f32.
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// Input image file, DICOM directory, .zip or .dcm file.
        input: PathBuf,
        /// Output file.
        output: PathBuf,
    },
    /// Compare two label maps on the same grid (differing voxels, Dice per class, geometry); optionally draw the
    /// first on the middle axial slice of an image as a PNG.
    Compare {
        /// Label map to check.
        prediction: PathBuf,
        /// Reference label map.
        reference: PathBuf,
        /// Image to draw the overlay on.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Overlay PNG to write (needs --image).
        #[arg(long)]
        overlay: Option<PathBuf>,
    },
    /// Write a label map as DICOM SEG (one binary segment per label) referencing its source DICOM series.
    Seg {
        /// Source DICOM series: directory, .zip or .dcm file.
        #[arg(long)]
        source: PathBuf,
        /// DICOM: the SeriesInstanceUID (or SeriesNumber) of the source when the input holds several series.
        #[arg(long)]
        series: Option<String>,
        /// Label map (NIfTI or MetaImage) on the source grid, possibly in another axis order (e.g. RAS).
        #[arg(long)]
        labels: PathBuf,
        /// Segment names in label order (1, 2, ...), comma-separated; default "label N".
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
        /// Replace patient-identifying attributes by placeholders instead of copying them from the source.
        #[arg(long)]
        anonymize: bool,
        /// Output DICOM SEG file.
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Load a volume from an image file or DICOM input; returns the volume and a format name.
pub(crate) fn load_any(input: &Path, series: Option<&str>) -> Result<(Volume, String)> {
    if FileFormat::from_path(input).is_some() {
        let v =
            imaging::io::load(input).with_context(|| format!("cannot read {}", input.display()))?;
        return Ok((
            v,
            format!("{:?}", imaging::io::probe(input)?.format).to_lowercase(),
        ));
    }
    if imaging::dicom::looks_like_dicom(input) {
        let v = imaging::dicom::read_series(input, series)
            .with_context(|| format!("cannot read DICOM input {}", input.display()))?;
        return Ok((v, "dicom".into()));
    }
    anyhow::bail!(
        "{}: unknown input (expected .nii, .nii.gz, .mha, .mhd, a DICOM directory, .zip or .dcm)",
        input.display()
    )
}

fn parse_dtype(s: &str, vol: &Volume) -> Result<NiftiDtype> {
    Ok(match s {
        "u8" => NiftiDtype::U8,
        "i16" => NiftiDtype::I16,
        "i32" => NiftiDtype::I32,
        "f32" => NiftiDtype::F32,
        "auto" => {
            let integral = vol.data.iter().all(|v| v.fract() == 0.0);
            let (lo, hi) = vol
                .data
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            if !integral || vol.data.is_empty() {
                NiftiDtype::F32
            } else if lo >= 0.0 && hi <= 255.0 {
                NiftiDtype::U8
            } else if lo >= -32768.0 && hi <= 32767.0 {
                NiftiDtype::I16
            } else {
                NiftiDtype::F32
            }
        }
        other => anyhow::bail!("--dtype {other}: expected auto, u8, i16, i32 or f32"),
    })
}

fn convert(input: &Path, output: &Path, series: Option<&str>, dtype: &str) -> Result<()> {
    let format = FileFormat::from_path(output).with_context(|| {
        format!(
            "{}: unknown output extension (expected .nii, .nii.gz, .mha or .mhd)",
            output.display()
        )
    })?;
    let (vol, _) = load_any(input, series)?;
    match format {
        FileFormat::Nii | FileFormat::NiiGz => {
            imaging::io::save_nifti(&vol, output, parse_dtype(dtype, &vol)?)
        }
        FileFormat::Mha | FileFormat::Mhd => imaging::io::save_metaimage(&vol, output),
    }
    .with_context(|| format!("cannot write {}", output.display()))?;
    let s = vol.spatial_shape();
    eprintln!(
        "wrote {} ({}x{}x{}, {} channel(s))",
        output.display(),
        s[0],
        s[1],
        s[2],
        vol.channels()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info {
            json,
            series,
            input,
        } => info::run(&input, series.as_deref(), json),
        Command::Compare {
            prediction,
            reference,
            image,
            overlay,
        } => compare::run(
            &prediction,
            &reference,
            image.as_deref(),
            overlay.as_deref(),
        ),
        Command::Series { json, input } => {
            let list = imaging::dicom::list_series(&input)
                .with_context(|| format!("cannot list DICOM series in {}", input.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for s in list {
                    let num = s
                        .series_number
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "-".into());
                    let size = s
                        .size
                        .map(|(c, r)| format!("{c}x{r}"))
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{}  #{num}  {}  {} files ({} images)  {size}  {}  {}",
                        s.series_uid,
                        s.modality,
                        s.files,
                        s.images,
                        s.transfer_syntax,
                        s.description
                    );
                }
            }
            Ok(())
        }
        Command::Convert {
            series,
            dtype,
            input,
            output,
        } => convert(&input, &output, series.as_deref(), &dtype),
        Command::Seg {
            source,
            series,
            labels,
            names,
            anonymize,
            output,
        } => seg::run(&seg::SegArgs {
            source,
            series,
            labels,
            names,
            anonymize,
            output,
        }),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medmae: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
