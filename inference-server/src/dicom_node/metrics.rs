//! Prometheus metrics of the DICOM node (registered in the server's registry under `medmae_dicom_*`). Labels are
//! fixed words and destination names from the configuration: never AE titles from the network, UIDs or attributes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// What happened ("accepted", "stored", "queued", ...).
    pub outcome: String,
}

/// A destination label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabel {
    /// Destination name from the configuration.
    pub destination: String,
}

/// The DICOM node's metrics.
#[derive(Clone, Default)]
pub struct DicomMetrics {
    /// 1 while the listener runs.
    pub up: Gauge,
    /// Associations by outcome: accepted, rejected (AE policy), busy (max_associations).
    pub associations: Family<Outcome, Counter>,
    /// Associations open now.
    pub associations_active: Gauge,
    /// Instances by outcome: stored, duplicate, refused.
    pub instances: Family<Outcome, Counter>,
    /// Bytes of instances stored.
    pub received_bytes: Counter,
    /// Completed series by outcome: queued, duplicate, held, unmatched_kept, unmatched_discarded.
    pub series_completed: Family<Outcome, Counter>,
    /// Jobs waiting, segmenting or sending.
    pub jobs_queued: Gauge,
    /// Jobs that failed.
    pub jobs_failed: Counter,
    /// Jobs delivered everywhere.
    pub jobs_done: Counter,
    /// SEGs acknowledged, by destination.
    pub segs_sent: Family<DestinationLabel, Counter>,
    /// Failed delivery tries, by destination.
    pub send_failures: Family<DestinationLabel, Counter>,
    /// Bytes in the spool.
    pub spool_bytes: Gauge,
}

impl DicomMetrics {
    /// Create the metrics and register them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("dicom");
        r.register("up", "1 while the DICOM listener runs", m.up.clone());
        r.register(
            "associations",
            "DICOM associations by outcome (accepted, rejected, busy)",
            m.associations.clone(),
        );
        r.register(
            "associations_active",
            "DICOM associations open now",
            m.associations_active.clone(),
        );
        r.register(
            "instances_received",
            "C-STORE instances by outcome (stored, duplicate, refused)",
            m.instances.clone(),
        );
        r.register(
            "received_bytes",
            "Bytes of instances written to the spool",
            m.received_bytes.clone(),
        );
        r.register(
            "series_completed",
            "Completed series by outcome (queued, duplicate, held, unmatched_kept, unmatched_discarded)",
            m.series_completed.clone(),
        );
        r.register(
            "jobs_queued",
            "Jobs waiting, segmenting or sending",
            m.jobs_queued.clone(),
        );
        r.register("jobs_failed", "Jobs that failed", m.jobs_failed.clone());
        r.register(
            "jobs_done",
            "Jobs delivered to every destination",
            m.jobs_done.clone(),
        );
        r.register(
            "segs_sent",
            "DICOM SEGs acknowledged by a destination",
            m.segs_sent.clone(),
        );
        r.register(
            "send_failures",
            "Failed SEG delivery tries",
            m.send_failures.clone(),
        );
        r.register("spool_bytes", "Bytes in the spool", m.spool_bytes.clone());
        m
    }

    /// Count one outcome in a family.
    pub fn count(family: &Family<Outcome, Counter>, outcome: &str) {
        family
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The counter of a destination in a family.
    pub fn destination<'a>(
        family: &'a Family<DestinationLabel, Counter>,
        name: &str,
    ) -> impl std::ops::Deref<Target = Counter> + 'a {
        family.get_or_create(&DestinationLabel {
            destination: name.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_the_dicom_prefix() {
        let mut reg = Registry::with_prefix("medmae");
        let m = DicomMetrics::register(&mut reg);
        DicomMetrics::count(&m.instances, "stored");
        DicomMetrics::destination(&m.segs_sent, "pacs").inc();
        m.up.set(1);
        let mut t = String::new();
        prometheus_client::encoding::text::encode(&mut t, &reg).unwrap();
        assert!(
            t.contains(r#"medmae_dicom_instances_received_total{outcome="stored"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"medmae_dicom_segs_sent_total{destination="pacs"} 1"#),
            "{t}"
        );
        assert!(t.contains("medmae_dicom_up 1"), "{t}");
    }
}
