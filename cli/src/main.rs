//! `medmae`: inspect and convert medical images (NIfTI, MetaImage, DICOM series), compare label maps, and make and
//! check dataset folders.
//!
//! Never prints patient-identifying DICOM attributes: the imaging crate does not even read them.

mod compare;
mod convert;
mod dataset;
mod info;
mod listing;
mod load;
mod seg;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use imaging::io::LoadOptions;

use convert::ChannelAxis;

/// Inspect and convert medical images: NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and DICOM series
/// (a directory, a .zip or a .dcm file).
#[derive(Debug, Parser)]
#[command(name = "medmae", version, about)]
struct Cli {
    /// Let MetaImage headers (.mhd/.mha) name data files outside their own folder (absolute paths, `..`). Off by
    /// default: a header from elsewhere could otherwise make medmae read any file. Use only for headers you trust.
    #[arg(long, global = true)]
    allow_external_data: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a volume's facts: format, stored dims, time axis vs vector components, dtype, shape, spacing, origin,
    /// direction, RAS affine, axcodes, intensity statistics (with sum), a SHA-256 checksum of the voxel values and,
    /// for integer images, label values and counts. A DICOM SEG lists its segments; a folder of images lists one
    /// header line per file.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Report the geometry after reorienting the voxel axes to RAS (same as --orient RAS).
        #[arg(long, conflicts_with = "orient")]
        ras: bool,
        /// Report the geometry after reorienting the voxel axes to these axis codes (e.g. LPS, PIL).
        #[arg(long, value_name = "CODES")]
        orient: Option<String>,
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
    /// extension (.nii, .nii.gz, .mha, .mhd). The stored axes are kept: a 2-D file stays 2-D, a 4-D file keeps its
    /// 4th axis with its step (pixdim[4]) and unit, vector components stay components.
    Convert {
        /// DICOM: the SeriesInstanceUID (or SeriesNumber) to read when the input holds several series.
        #[arg(long)]
        series: Option<String>,
        /// NIfTI output element type: auto (integer type when every value is an integer that fits), u8, i16, i32,
        /// f32.
        #[arg(long, default_value = "auto")]
        dtype: String,
        /// Reorient the voxel axes to these axis codes (e.g. RAS, LPS) before writing.
        #[arg(long, value_name = "CODES")]
        orient: Option<String>,
        /// How to store the channels: as the input does (keep), on a 4th time axis, or as vector components.
        #[arg(long, value_enum, default_value = "keep")]
        channels: ChannelAxis,
        /// Write a NIfTI-2 header (64-bit dimensions) instead of NIfTI-1.
        #[arg(long)]
        nifti2: bool,
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
    Create(dataset::CreateArgs),
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

fn run(cli: Cli) -> Result<()> {
    let opts = LoadOptions {
        allow_external_data: cli.allow_external_data,
        ..LoadOptions::default()
    };
    match cli.command {
        Command::Info {
            json,
            ras,
            orient,
            series,
            input,
        } => {
            if imaging::dicom::is_seg_file(&input) {
                return listing::seg(&input, json);
            }
            if input.is_dir() && !imaging::dicom::looks_like_dicom(&input) {
                return listing::folder(&input, json, &opts);
            }
            let orient = if ras { Some("RAS".to_string()) } else { orient };
            let f = info::facts(&input, series.as_deref(), orient.as_deref(), &opts)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&f)?);
            } else {
                info::print(&f);
            }
            Ok(())
        }
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
            &opts,
        ),
        Command::Dataset { command } => match command {
            DatasetCommand::Create(args) => dataset::create(&args),
            DatasetCommand::Check { json, dir } => dataset::check(&dir, json),
        },
        Command::Series { json, input } => {
            let list = imaging::dicom::list_series(&input)?;
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
            orient,
            channels,
            nifti2,
            input,
            output,
        } => convert::run(
            &convert::ConvertArgs {
                input: &input,
                output: &output,
                series: series.as_deref(),
                dtype: &dtype,
                orient: orient.as_deref(),
                channels,
                nifti2,
            },
            &opts,
        ),
        Command::Seg {
            source,
            series,
            labels,
            names,
            anonymize,
            output,
        } => seg::run(
            &seg::SegArgs {
                source,
                series,
                labels,
                names,
                anonymize,
                output,
            },
            &opts,
        ),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The errors name their file once and carry no `source()` chain to repeat.
            eprintln!("medmae: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
