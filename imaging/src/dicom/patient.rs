//! Patient and study identification of a source series, kept opaque: it is only ever copied into derived objects
//! (DICOM SEG) or replaced by placeholders, and its `Debug` output is redacted so it cannot reach a log.

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject};

/// The identifying attributes copied into derived objects, with the placeholder used when anonymising: empty where
/// the standard allows it, a dummy value (PS3.15 action "Z") where an empty value would leave the object incomplete
/// (a person name in component form; Study Date, Time and ID, which a DICOMDIR needs).
const ATTRIBUTES: [(Tag, VR, &str); 9] = [
    (tags::PATIENT_NAME, VR::PN, "Anonymous^"),
    (tags::PATIENT_ID, VR::LO, "ANONYMOUS"),
    (tags::PATIENT_BIRTH_DATE, VR::DA, ""),
    (tags::PATIENT_SEX, VR::CS, ""),
    (tags::STUDY_DATE, VR::DA, "19000101"),
    (tags::STUDY_TIME, VR::TM, "000000"),
    (tags::STUDY_ID, VR::SH, "ANONYMOUS"),
    (tags::ACCESSION_NUMBER, VR::SH, ""),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN, ""),
];

/// Patient/study identification of a series (never printed: `Debug` is redacted).
#[derive(Clone, Default)]
pub struct PatientContext {
    values: Vec<(Tag, VR, String)>,
}

impl std::fmt::Debug for PatientContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PatientContext({} attributes, redacted)",
            self.values.len()
        )
    }
}

impl PatientContext {
    /// Take the identifying attributes of a source object (absent ones become empty, as type 2 allows).
    pub(crate) fn from_object(obj: &DefaultDicomObject) -> Self {
        let values = ATTRIBUTES
            .iter()
            .map(|&(tag, vr, _)| {
                let v = obj
                    .element_opt(tag)
                    .ok()
                    .flatten()
                    .and_then(|e| {
                        e.to_str()
                            .ok()
                            .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
                    })
                    .unwrap_or_default();
                (tag, vr, v)
            })
            .collect();
        Self { values }
    }

    /// The elements to write into a derived object: the source's values, or placeholders when `anonymize`.
    pub fn elements(&self, anonymize: bool) -> Vec<DataElement<InMemDicomObject>> {
        ATTRIBUTES
            .iter()
            .map(|&(tag, vr, placeholder)| {
                let value = if anonymize {
                    placeholder.to_string()
                } else {
                    self.values
                        .iter()
                        .find(|(t, _, _)| *t == tag)
                        .map(|(_, _, v)| v.clone())
                        .unwrap_or_default()
                };
                DataElement::new(tag, vr, PrimitiveValue::from(value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_anonymize_replaces() {
        let ctx = PatientContext {
            values: vec![(tags::PATIENT_NAME, VR::PN, "Doe^Jane".into())],
        };
        assert!(!format!("{ctx:?}").contains("Doe"));
        let anon = ctx.elements(true);
        assert!(anon.iter().all(|e| !e.to_str().unwrap().contains("Doe")));
        assert!(ctx
            .elements(false)
            .iter()
            .any(|e| e.to_str().unwrap() == "Doe^Jane"));
    }
}
