//! Routing: the series attributes a rule can test (Modality, BodyPartExamined, SeriesDescription, calling AE) and
//! the first rule that selects a series.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};

use super::config::Route;

/// What routing looks at (never logged: descriptions may hold free text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesAttrs {
    /// Modality, upper case.
    pub modality: String,
    /// BodyPartExamined, upper case.
    pub body_part: String,
    /// SeriesDescription.
    pub description: String,
    /// Calling AE title of the sender.
    pub calling_ae: String,
}

/// Read the routing attributes from a spooled instance (a Part 10 file this node wrote after checking it).
pub fn read_attrs(file: &Path, calling_ae: &str) -> Result<SeriesAttrs, String> {
    let obj = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .open_file(file)
        .map_err(|e| format!("reading a spooled instance: {e}"))?;
    let text = |tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| {
                e.to_str()
                    .ok()
                    .map(|s| s.trim_matches(['\0', ' ']).to_string())
            })
            .unwrap_or_default()
    };
    Ok(SeriesAttrs {
        modality: text(tags::MODALITY).to_ascii_uppercase(),
        body_part: text(tags::BODY_PART_EXAMINED).to_ascii_uppercase(),
        description: text(tags::SERIES_DESCRIPTION),
        calling_ae: calling_ae.to_string(),
    })
}

/// True if every criterion of `route` holds for `a`.
pub fn matches(route: &Route, a: &SeriesAttrs) -> bool {
    let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    any(&route.modality, &a.modality)
        && any(&route.body_part, &a.body_part)
        && any(&route.calling_ae, &a.calling_ae)
        && route
            .series_description
            .as_ref()
            .is_none_or(|p| p.0.is_match(&a.description))
}

/// The first route that selects the series.
pub fn select<'a>(routes: &'a [Route], a: &SeriesAttrs) -> Option<&'a Route> {
    routes.iter().find(|r| matches(r, a))
}

#[cfg(test)]
mod tests {
    use super::super::config::Pattern;
    use super::*;

    fn route(model: &str) -> Route {
        Route {
            model: model.into(),
            modality: vec![],
            body_part: vec![],
            series_description: None,
            calling_ae: vec![],
            destinations: vec![],
        }
    }

    #[test]
    fn first_matching_rule_wins() {
        let head = Route {
            modality: vec!["CT".into()],
            body_part: vec!["HEAD".into(), "BRAIN".into()],
            series_description: Some(Pattern(regex::Regex::new("(?i)axial").unwrap())),
            calling_ae: vec!["SCANNER1".into()],
            ..route("head")
        };
        let mr = Route {
            modality: vec!["MR".into()],
            ..route("mr")
        };
        let routes = vec![head, mr, route("fallback")];
        let mut a = SeriesAttrs {
            modality: "CT".into(),
            body_part: "BRAIN".into(),
            description: "Head 5mm AXIAL".into(),
            calling_ae: "SCANNER1".into(),
        };
        assert_eq!(select(&routes, &a).unwrap().model, "head");
        a.calling_ae = "OTHER".into();
        assert_eq!(select(&routes, &a).unwrap().model, "fallback");
        a.modality = "MR".into();
        assert_eq!(select(&routes, &a).unwrap().model, "mr");
        assert!(select(&routes[..2], &SeriesAttrs::default()).is_none());
    }
}
