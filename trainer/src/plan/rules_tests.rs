//! Tests of `rules`.
use super::*;

#[test]
fn spacing_is_the_median_unless_strongly_anisotropic() {
    let sp = [
        [2.0, 3.0, 2.0],
        [1.5, 3.0, 2.0],
        [2.0, 2.5, 2.0],
        [2.0, 3.0, 2.0],
        [2.0, 3.0, 2.5],
    ];
    let sh = [[48, 40, 48]; 5];
    assert_eq!(target_spacing(&sp, &sh), [2.0, 3.0, 2.0]);
    // Thick slices (5–8 mm vs 0.8 mm) with few of them: the 10th percentile of the slice spacing, as nnU-Net.
    let sp = [
        [0.8, 0.8, 5.0],
        [0.8, 0.8, 6.0],
        [0.8, 0.8, 8.0],
        [0.8, 0.8, 7.0],
        [0.8, 0.8, 5.5],
    ];
    let sh = [[512, 512, 40]; 5];
    let t = target_spacing(&sp, &sh);
    assert_eq!(&t[..2], &[0.8, 0.8]);
    // np.percentile([5, 5.5, 6, 7, 8], 10) = 5.2
    assert!((t[2] - 5.2).abs() < 1e-6, "{t:?}");
    // Anisotropic spacing but many slices: plain median.
    let sh = [[512, 512, 400]; 5];
    assert_eq!(target_spacing(&sp, &sh)[2], 6.0);
}

#[test]
fn presets_cap_the_image_size() {
    let tiny = Preset::Tiny.arch();
    let (t, f) = coarsen_for_preset(&tiny, [1.0; 3], [48.0, 40.0, 48.0]);
    assert_eq!((t, f), ([1.0; 3], 1.0));
    let (t, f) = coarsen_for_preset(&tiny, [0.8, 0.8, 2.0], [512.0, 512.0, 64.0]);
    assert_eq!(f, 4.0, "(512·512·64 / 64³)^(1/3) = 4");
    assert_eq!(t, [3.2, 3.2, 8.0]);
    let base = Preset::Base.arch();
    assert_eq!(coarsen_for_preset(&base, [1.0; 3], [512.0; 3]).1, 1.0);
    assert_eq!(
        resampled_shape([100.0, 100.0, 50.0], [1.0, 1.0, 4.0], [2.0, 2.0, 2.0]),
        [50.0, 50.0, 100.0]
    );
}

fn stats(p0: f64, p99: f64) -> IntensityStats {
    IntensityStats {
        count: 10,
        min: p0 - 1.0,
        p00_5: p0,
        p50: (p0 + p99) / 2.0,
        p99_5: p99,
        max: p99 + 1.0,
        mean: 0.0,
        std: 1.0,
    }
}

#[test]
fn ct_clips_to_foreground_percentiles_others_zscore() {
    let (t, why) = normalization(&[Modality::Ct], &[Some(stats(-120.5, 240.0))], &[None]);
    assert_eq!(
        t,
        TransformSpec::ScaleIntensityRange {
            a_min: -120.5,
            a_max: 240.0,
            b_min: 0.0,
            b_max: 1.0,
            clip: true
        }
    );
    assert!(why.contains("foreground 0.5–99.5"), "{why}");
    let (t, why) = normalization(&[Modality::Mr], &[Some(stats(0.0, 1.0))], &[None]);
    assert_eq!(
        t,
        TransformSpec::NormalizeIntensity {
            nonzero: true,
            channel_wise: true
        }
    );
    assert!(why.starts_with("MR"));
    let two = [Modality::Ct, Modality::Mr];
    assert!(matches!(
        normalization(&two, &[None, None], &[None, None]).0,
        TransformSpec::NormalizeIntensity { .. }
    ));
    let (_, why) = normalization(&[Modality::Ct], &[None], &[Some(stats(-1000.0, 500.0))]);
    assert!(why.contains("all-voxel"));
}

#[test]
fn roi_fits_budget_image_and_cap() {
    let tiny = Preset::Tiny.arch();
    let p = fit_roi(&tiny, [48.0, 40.0, 48.0], 4.0 * GIB, 1, 2).unwrap();
    assert_eq!((p.roi, p.crops), ([32; 3], 2), "tiny caps at 32");
    let small = Preset::Small.arch();
    let p = fit_roi(&small, [70.0, 40.0, 200.0], 64.0 * GIB, 1, 3).unwrap();
    assert_eq!(p.roi, [80, 48, 96], "median rounded up to 16, capped at 96");
    let base = Preset::Base.arch();
    let big = fit_roi(&base, [300.0; 3], 80.0 * GIB, 1, 14).unwrap();
    let tight = fit_roi(&base, [300.0; 3], 12.0 * GIB, 1, 14).unwrap();
    assert!(tight.bytes <= 12.0 * GIB && big.bytes <= 80.0 * GIB);
    assert!(tight.roi.iter().product::<usize>() < big.roi.iter().product::<usize>());
    assert!(tight.roi.iter().all(|r| r % PATCH == 0));
    // Maximal: one more patch on any axis (within the caps) would not fit.
    for a in 0..3 {
        let mut more = tight.roi;
        more[a] += PATCH;
        if more[a] <= base.max_roi {
            assert!(
                memory_bytes(&base, more, tight.crops, 1, 14) > 12.0 * GIB
                    || tight.crops < base.crops
            );
        }
    }
    let e = fit_roi(&base, [300.0; 3], 0.1 * GIB, 1, 14)
        .unwrap_err()
        .to_string();
    assert!(e.contains("--budget-gib") && e.contains("too small"), "{e}");
    assert!(memory_bytes(&base, [96; 3], 4, 1, 14) > memory_bytes(&base, [96; 3], 2, 1, 14));
}

#[test]
fn mae_batch_respects_cases_and_budget() {
    let tiny = Preset::Tiny.arch();
    assert_eq!(mae_batch(&tiny, [32; 3], 4.0 * GIB, 100), 4);
    assert_eq!(mae_batch(&tiny, [32; 3], 4.0 * GIB, 3), 3);
    let base = Preset::Base.arch();
    assert!(mae_batch(&base, [128; 3], 3.0 * GIB, 100) < 6);
}

#[test]
fn split_works_for_any_case_count() {
    assert!(split(0).is_err());
    assert_eq!(split(1).unwrap(), SplitPlan::SameCase);
    assert_eq!(split(3).unwrap(), SplitPlan::HeldOut(2));
    assert_eq!(split(4).unwrap(), SplitPlan::HeldOut(3));
    assert_eq!(
        split(5).unwrap(),
        SplitPlan::Folds {
            num_folds: 5,
            fold: 0
        }
    );
}

#[test]
fn classes_from_found_and_declared_labels() {
    let stat = LabelStat {
        name: String::new(),
        voxels: 1,
        cases: 1,
        fraction: 0.5,
    };
    let found: BTreeMap<u32, LabelStat> = [(0, stat.clone()), (2, stat.clone())].into();
    let (k, names) = classes(&found, &BTreeMap::new()).unwrap();
    assert_eq!(
        (k, names),
        (
            3,
            vec!["background".into(), "class1".into(), "class2".into()]
        )
    );
    let declared: BTreeMap<u32, String> =
        [(0, "bg".into()), (1, "tumour".into()), (3, "cyst".into())].into();
    let (k, names) = classes(&found, &declared).unwrap();
    assert_eq!(k, 4);
    assert_eq!(names, ["bg", "tumour", "class2", "cyst"]);
    let only_bg: BTreeMap<u32, LabelStat> = [(0, stat)].into();
    assert!(classes(&only_bg, &BTreeMap::new()).is_err());
}

#[test]
fn epochs_have_a_tenth_of_the_steps() {
    // tiny UNETR: 300 steps, 4 cases, batch 1 → 30 steps per epoch → 8 visits (32 steps).
    assert_eq!(visits_per_epoch(300, 4, 1), 8);
    // tiny MAE: 120 steps, 4 cases, batch 4 → 12 steps of 4 → 12 visits.
    assert_eq!(visits_per_epoch(120, 4, 4), 12);
    // Many cases: one visit; epochs never exceed 250 steps.
    assert_eq!(visits_per_epoch(30000, 500, 4), 2);
    assert_eq!(visits_per_epoch(30000, 5000, 1), 1);
    assert_eq!(visits_per_epoch(5, 10, 1), 1);
}

#[test]
fn schedule_from_steps() {
    let s = schedule(300, 8);
    assert_eq!((s.epochs, s.warmup_epochs, s.every_epochs), (38, 1, 7));
    assert_eq!(s.log_every_steps, 15);
    let one = schedule(1, 10);
    assert_eq!((one.epochs, one.warmup_epochs, one.every_epochs), (1, 0, 1));
    assert_eq!(schedule(20000, 1).warmup_epochs, 1000);
}
