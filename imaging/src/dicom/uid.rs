//! Fresh DICOM UIDs and the current date/time as DICOM DA/TM strings, for derived objects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Distinguishes UIDs made within one clock tick.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh UID under the `2.25` (UUID-derived) root, from a hash of `seed`, the time, the process and a counter.
pub fn new_uid(seed: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // UUID version 4 bits, as 2.25 UIDs are meant to be derived from UUIDs.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(b))
}

/// Today's date and the current time (UTC) as DICOM DA and TM strings.
pub(crate) fn now_da_tm() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let tod = secs % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}{month:02}{day:02}"),
        format!("{:02}{:02}{:02}", tod / 3600, tod / 60 % 60, tod % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_valid_and_unique() {
        let (a, b) = (new_uid("x"), new_uid("x"));
        assert!(
            a.starts_with("2.25.")
                && a.len() <= 64
                && a.chars().all(|c| c.is_ascii_digit() || c == '.')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn civil_date_is_plausible() {
        let (d, t) = now_da_tm();
        assert_eq!((d.len(), t.len()), (8, 6));
        assert!(d.as_str() >= "20240101");
    }
}
