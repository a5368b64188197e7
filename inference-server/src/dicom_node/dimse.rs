//! DIMSE command sets (PS3.7 §9, §E): decoding the few fields this node reads from a request or response, and
//! encoding C-ECHO/C-STORE requests and responses. Command sets are always Implicit VR Little Endian.

use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;

/// Largest command set accepted (real ones are a few hundred bytes).
pub const MAX_COMMAND_BYTES: usize = 16 << 10;

/// C-STORE-RQ.
pub const C_STORE_RQ: u16 = 0x0001;
/// C-STORE-RSP.
pub const C_STORE_RSP: u16 = 0x8001;
/// C-ECHO-RQ.
pub const C_ECHO_RQ: u16 = 0x0030;
/// C-ECHO-RSP.
pub const C_ECHO_RSP: u16 = 0x8030;
/// CommandDataSetType value meaning "no data set follows".
const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes this node sends or interprets (PS3.4 Annex B, PS3.7 Annex C).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Refused: out of resources (series or spool limits, disk full).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class (no pixel data, UIDs disagree with the command).
    pub const DATA_SET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand (unreadable or undecodable data set).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: u16 = 0x0122;
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// Processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;

    /// True for success and the warning statuses of C-STORE (the instance was stored).
    pub fn stored(code: u16) -> bool {
        matches!(code, SUCCESS | 0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF)
    }
}

/// A malformed command set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed DIMSE command set: {0}")]
pub struct CommandError(pub String);

/// The fields of a command set this node uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// CommandField.
    pub field: u16,
    /// MessageID (requests).
    pub message_id: u16,
    /// MessageIDBeingRespondedTo (responses).
    pub responded_to: u16,
    /// AffectedSOPClassUID.
    pub sop_class: String,
    /// AffectedSOPInstanceUID.
    pub sop_instance: String,
    /// Whether a data set follows.
    pub has_data_set: bool,
    /// Status (responses).
    pub status: Option<u16>,
}

fn uid(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn us(v: &[u8], what: &str) -> Result<u16, CommandError> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_le_bytes)
        .map_err(|_| CommandError(format!("{what} has {} bytes; expected 2", v.len())))
}

/// Decode a command set (group 0000 elements, Implicit VR Little Endian), checking every length against the bytes.
pub fn parse_command(bytes: &[u8]) -> Result<Command, CommandError> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(CommandError(format!(
            "{} bytes; at most {MAX_COMMAND_BYTES} accepted",
            bytes.len()
        )));
    }
    let mut cmd = Command::default();
    let (mut pos, mut field, mut data_set_type) = (0usize, None, None);
    while pos < bytes.len() {
        let head = bytes
            .get(pos..pos + 8)
            .ok_or_else(|| CommandError(format!("element header cut at byte {pos}")))?;
        let group = u16::from_le_bytes([head[0], head[1]]);
        let element = u16::from_le_bytes([head[2], head[3]]);
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let value = bytes.get(pos + 8..pos + 8 + len).ok_or_else(|| {
            CommandError(format!(
                "element ({group:04X},{element:04X}) declares {len} bytes; {} remain",
                bytes.len() - pos - 8
            ))
        })?;
        if group != 0x0000 {
            return Err(CommandError(format!(
                "element ({group:04X},{element:04X}) outside the command group"
            )));
        }
        match element {
            0x0002 => cmd.sop_class = uid(value),
            0x0100 => field = Some(us(value, "CommandField")?),
            0x0110 => cmd.message_id = us(value, "MessageID")?,
            0x0120 => cmd.responded_to = us(value, "MessageIDBeingRespondedTo")?,
            0x0800 => data_set_type = Some(us(value, "CommandDataSetType")?),
            0x0900 => cmd.status = Some(us(value, "Status")?),
            0x1000 => cmd.sop_instance = uid(value),
            _ => {}
        }
        pos += 8 + len;
    }
    cmd.field = field.ok_or_else(|| CommandError("no CommandField (0000,0100)".into()))?;
    cmd.has_data_set = data_set_type
        .ok_or_else(|| CommandError("no CommandDataSetType (0000,0800)".into()))?
        != NO_DATA_SET;
    Ok(cmd)
}

fn encode(elements: Vec<DataElement<InMemDicomObject>>) -> Vec<u8> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut out = Vec::with_capacity(256);
    // Writing a command of US/UI elements into a Vec cannot fail.
    if obj
        .write_dataset_with_ts(&mut out, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .is_err()
    {
        out.clear();
    }
    out
}

fn ui(tag: dicom_core::Tag, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::UI, dicom_value!(Str, v))
}

fn u16e(tag: dicom_core::Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

/// A C-ECHO-RSP.
pub fn echo_rsp(message_id: u16, code: u16) -> Vec<u8> {
    encode(vec![
        ui(
            tags::AFFECTED_SOP_CLASS_UID,
            dicom_dictionary_std::uids::VERIFICATION,
        ),
        u16e(tags::COMMAND_FIELD, C_ECHO_RSP),
        u16e(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        u16e(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        u16e(tags::STATUS, code),
    ])
}

/// A response with only a status (for an operation this node does not perform: `field` | 0x8000).
pub fn bare_rsp(field: u16, message_id: u16, code: u16) -> Vec<u8> {
    encode(vec![
        u16e(tags::COMMAND_FIELD, field | 0x8000),
        u16e(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        u16e(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        u16e(tags::STATUS, code),
    ])
}

/// A C-STORE-RSP.
pub fn store_rsp(message_id: u16, sop_class: &str, sop_instance: &str, code: u16) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        u16e(tags::COMMAND_FIELD, C_STORE_RSP),
        u16e(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
        u16e(tags::COMMAND_DATA_SET_TYPE, NO_DATA_SET),
        u16e(tags::STATUS, code),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

/// A C-STORE-RQ (medium priority, a data set follows).
pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Vec<u8> {
    encode(vec![
        ui(tags::AFFECTED_SOP_CLASS_UID, sop_class),
        u16e(tags::COMMAND_FIELD, C_STORE_RQ),
        u16e(tags::MESSAGE_ID, message_id),
        u16e(tags::PRIORITY, 0),
        u16e(tags::COMMAND_DATA_SET_TYPE, 0x0000),
        ui(tags::AFFECTED_SOP_INSTANCE_UID, sop_instance),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-encoded C-STORE-RQ following PS3.7 Annex E (independent of dicom-object).
    fn hand_store_rq() -> Vec<u8> {
        let mut b = Vec::new();
        let mut put = |el: u16, v: &[u8]| {
            b.extend_from_slice(&0u16.to_le_bytes());
            b.extend_from_slice(&el.to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(v);
        };
        put(0x0000, &100u32.to_le_bytes());
        put(0x0002, b"1.2.840.10008.5.1.4.1.1.2\0");
        put(0x0100, &1u16.to_le_bytes());
        put(0x0110, &7u16.to_le_bytes());
        put(0x0700, &0u16.to_le_bytes());
        put(0x0800, &0u16.to_le_bytes());
        put(0x1000, b"1.2.3.4 ");
        b
    }

    #[test]
    fn parses_a_hand_encoded_request() {
        let c = parse_command(&hand_store_rq()).unwrap();
        assert_eq!(c.field, C_STORE_RQ);
        assert_eq!(c.message_id, 7);
        assert_eq!(c.sop_class, "1.2.840.10008.5.1.4.1.1.2");
        assert_eq!(c.sop_instance, "1.2.3.4");
        assert!(c.has_data_set);
        assert_eq!(c.status, None);
    }

    #[test]
    fn encoded_commands_round_trip_with_group_length() {
        let rsp = store_rsp(
            9,
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.3",
            status::OUT_OF_RESOURCES,
        );
        // (0000,0000) UL group length first, equal to the bytes after it.
        assert_eq!(&rsp[..8], &[0, 0, 0, 0, 4, 0, 0, 0]);
        let len = u32::from_le_bytes([rsp[8], rsp[9], rsp[10], rsp[11]]) as usize;
        assert_eq!(len, rsp.len() - 12);
        let c = parse_command(&rsp).unwrap();
        assert_eq!(
            (c.field, c.responded_to, c.status, c.has_data_set),
            (C_STORE_RSP, 9, Some(0xA700), false)
        );
        assert_eq!(c.sop_instance, "1.2.3");
        let c = parse_command(&store_rq(3, "1.2", "1.2.3.4.5")).unwrap();
        assert_eq!(
            (c.field, c.message_id, c.has_data_set),
            (C_STORE_RQ, 3, true)
        );
        let c = parse_command(&echo_rsp(4, 0)).unwrap();
        assert_eq!(
            (c.field, c.responded_to, c.status),
            (C_ECHO_RSP, 4, Some(0))
        );
        assert_eq!(
            parse_command(&bare_rsp(0x0020, 5, 0x0211)).unwrap().field,
            0x8020
        );
    }

    #[test]
    fn malformed_commands_are_refused() {
        let mut b = hand_store_rq();
        b.truncate(b.len() - 3);
        assert!(parse_command(&b)
            .unwrap_err()
            .0
            .contains("declares 8 bytes"));
        let mut b = hand_store_rq();
        b[0] = 8; // group 0008
        assert!(parse_command(&b)
            .unwrap_err()
            .0
            .contains("outside the command group"));
        assert!(parse_command(&[0u8; 5]).unwrap_err().0.contains("cut"));
        assert!(parse_command(&vec![0u8; MAX_COMMAND_BYTES + 1]).is_err());
        // A huge declared length is an error, not an allocation.
        let mut b = vec![0, 0, 0x00, 0x01, 0xff, 0xff, 0xff, 0xff];
        b.extend_from_slice(&[1, 0]);
        assert!(parse_command(&b).is_err());
        assert!(status::stored(0xB007) && !status::stored(0xA700));
    }
}
