//! `medmae`: inspect and convert medical images (NIfTI, MetaImage, DICOM series), compare label maps, and make and
//! check dataset folders.
//!
//! Never prints patient-identifying DICOM attributes: the imaging crate does not even read them.

mod compare;
mod dataset;
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
    /// Compare two label maps on the same grid (differing voxels, Dice per class, geometry); optionally draw both
    /// on a slice of an image as a PNG (radiological orientation, reference and prediction panels, legend).
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
        /// Overlay plane: axial, coronal or sagittal.
        #[arg(long, default_value = "axial")]
        axis: imaging::draw::ViewAxis,
        /// Overlay slice: index along the plane's axis of the RAS-reoriented image (0 = right / posterior /
        /// inferior end); default: the slice with the most reference foreground.
        #[arg(long)]
        slice: Option<usize>,
        /// Class names for the overlay legend, comma-separated, index = label value (0 = background).
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
    },
    /// Make and check MSD-style dataset folders (`dataset.json` + imagesTr/labelsTr/imagesTs).
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
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

#[derive(Debug, Subcommand)]
enum DatasetCommand {
    /// Match images with label maps by file name and write an MSD-style folder with dataset.json (label maps must
    /// lie on their image's grid; label values found are listed).
    Create {
        /// Folder of images (.nii, .nii.gz, .mha, .mhd; nnU-Net `_0000` channel files are grouped).
        #[arg(long)]
        images: PathBuf,
        /// Folder of label maps, named like their images (optionally with _seg, _label, _mask, _gt).
        #[arg(long)]
        labels: PathBuf,
        /// Modality per image channel, comma-separated (e.g. CT, or T1,T2); recorded in dataset.json.
        #[arg(long, value_delimiter = ',')]
        modality: Vec<String>,
        /// Class names, comma-separated, index = label value (default background, class1, ...).
        #[arg(long, value_delimiter = ',')]
        label_names: Vec<String>,
        /// Dataset name (default: the output folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Symlink the files instead of copying them.
        #[arg(long)]
        link: bool,
        /// Dataset folder to create.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Report what is wrong with a dataset folder: missing or unreadable files, label maps off their image's grid,
    /// label values outside the declared set, channel counts, mixed orientations and spacings.
    Check {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Dataset folder (with dataset.json) or a dataset.json / datalist file.
        dir: PathBuf,
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
            axis,
            slice,
            names,
        } => compare::run(
            &prediction,
            &reference,
            &compare::OverlayArgs {
                image,
                overlay,
                axis,
                slice,
                names,
            },
        ),
        Command::Dataset { command } => match command {
            DatasetCommand::Create {
                images,
                labels,
                modality,
                label_names,
                name,
                link,
                output,
            } => dataset::create(&dataset::CreateArgs {
                images,
                labels,
                modality,
                label_names,
                name,
                link,
                output,
            }),
            DatasetCommand::Check { json, dir } => dataset::check(&dir, json),
        },
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
