//! The `/ws` wire format (spec §7.2–§7.5): decoding of inbound frames, and the payloads of the
//! control frames the gateway sends itself. Dispatched events are not built here: they arrive
//! serialised from the bus and get their `seq` spliced in (see `session::Event`).
//!
//! [`decode`] is the only place inbound text is parsed; it is total (never panics) and is the
//! fuzz target (`fuzz/fuzz_targets/ws_frame.rs`).

use std::borrow::Cow;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::entities::users::UserExt;
pub use crate::events::{Presence, PresenceStatus, TypingUpdate};
use crate::functions::ids::ChannelId;

/// The largest inbound frame (spec §7.2, §13): larger ones close the connection with 1009.
pub const MAX_INBOUND_FRAME: usize = 8 * 1024;

/// A client command (spec §7.4).
#[derive(Debug)]
pub enum Command {
    Authenticate {
        token: String,
    },
    Resume {
        token: String,
        session_id: Uuid,
        seq: u64,
    },
    /// `ping`: the reply echoes `data` exactly as it was sent.
    Ping {
        data: Box<RawValue>,
    },
    TypingStart {
        channel_id: ChannelId,
    },
    /// A known command whose `data` failed validation (ignored once authenticated).
    Invalid(KnownOp),
    /// An unknown op (ignored, as in Mikoto).
    Unknown,
}

impl PartialEq for Command {
    fn eq(&self, other: &Self) -> bool {
        use Command::*;
        match (self, other) {
            (Authenticate { token: a }, Authenticate { token: b }) => a == b,
            (
                Resume {
                    token: a,
                    session_id: s,
                    seq: q,
                },
                Resume {
                    token: b,
                    session_id: t,
                    seq: r,
                },
            ) => a == b && s == t && q == r,
            (Ping { data: a }, Ping { data: b }) => a.get() == b.get(),
            (TypingStart { channel_id: a }, TypingStart { channel_id: b }) => a == b,
            (Invalid(a), Invalid(b)) => a == b,
            (Unknown, Unknown) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownOp {
    Authenticate,
    Resume,
    Ping,
    TypingStart,
}

/// Why a frame could not be decoded: the connection closes with 4002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    NotAnObject,
    /// No string `op`.
    MissingOp,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    op: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// `{"op": ..., "data": ...}` with any other members ignored. A frame must be one JSON object.
pub fn decode(text: &str) -> Result<Command, DecodeError> {
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::NotAnObject);
    }
    let env: Envelope<'_> = match serde_json::from_str(text) {
        Ok(e) => e,
        // A well-formed object whose `op` is not a string (or is duplicated) has no usable op.
        Err(e) if e.is_data() => return Err(DecodeError::MissingOp),
        Err(_) => return Err(DecodeError::NotAnObject),
    };
    let Some(op) = env.op else {
        return Err(DecodeError::MissingOp);
    };
    let data = env.data.map(RawValue::get).unwrap_or("null");
    Ok(match op.as_ref() {
        "authenticate" => match serde_json::from_str::<AuthenticateData>(data) {
            Ok(d) => Command::Authenticate { token: d.token },
            Err(_) => Command::Invalid(KnownOp::Authenticate),
        },
        "resume" => match serde_json::from_str::<ResumeData>(data) {
            Ok(d) => Command::Resume {
                token: d.token,
                session_id: d.session_id,
                seq: d.seq,
            },
            Err(_) => Command::Invalid(KnownOp::Resume),
        },
        "ping" => match serde_json::from_str::<Ping>(data) {
            Ok(_) => match RawValue::from_string(data.to_string()) {
                Ok(data) => Command::Ping { data },
                Err(_) => Command::Invalid(KnownOp::Ping),
            },
            Err(_) => Command::Invalid(KnownOp::Ping),
        },
        "typing.start" => match serde_json::from_str::<TypingStart>(data) {
            Ok(d) => match d.channel_id.parse::<ChannelId>() {
                Ok(channel_id) => Command::TypingStart { channel_id },
                Err(_) => Command::Invalid(KnownOp::TypingStart),
            },
            Err(_) => Command::Invalid(KnownOp::TypingStart),
        },
        _ => Command::Unknown,
    })
}

#[derive(Deserialize)]
struct AuthenticateData {
    token: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResumeData {
    token: String,
    session_id: Uuid,
    seq: u64,
}

/// `ping` / `pong` data (Mikoto's `Ping`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Ping {
    pub message: String,
}

/// `typing.start` data (Mikoto's `TypingStart`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypingStart {
    pub channel_id: String,
}

/// `ready` data (spec §3.4, §7.6).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadyPayload {
    pub session_id: Uuid,
    pub heartbeat_interval_ms: u64,
    pub resume_window_ms: u64,
    pub user: UserExt,
}

/// `resumed` data.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumedPayload {
    pub session_id: Uuid,
    pub replayed: u64,
}

/// Why a `resume` failed (spec §3.4 `InvalidSessionPayload.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InvalidReason {
    #[serde(rename = "expired")]
    Expired,
    #[serde(rename = "unknown")]
    Unknown,
    #[serde(rename = "seq_out_of_range")]
    SeqOutOfRange,
    #[serde(rename = "user_mismatch")]
    UserMismatch,
}

/// `invalidSession` data.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InvalidSessionPayload {
    pub reason: InvalidReason,
}

/// `resync` data.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ResyncPayload {
    pub reason: String,
}

/// A control frame (`{"op","data"}` without `seq`).
pub fn control<T: Serialize>(op: &str, data: &T) -> String {
    #[derive(Serialize)]
    struct Frame<'a, T> {
        op: &'a str,
        data: &'a T,
    }
    serde_json::to_string(&Frame { op, data }).unwrap_or_else(|_| format!("{{\"op\":\"{op}\",\"data\":null}}"))
}

/// The `pong` reply: the `ping` data echoed byte for byte.
pub fn pong(data: &RawValue) -> String {
    format!("{{\"op\":\"pong\",\"data\":{}}}", data.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(
            decode(r#"{"op":"authenticate","data":{"token":"t"}}"#),
            Ok(Command::Authenticate { token: "t".into() })
        );
        let sid = Uuid::now_v7();
        assert_eq!(
            decode(&format!(
                r#"{{"data":{{"token":"t","sessionId":"{sid}","seq":7}},"op":"resume","extra":1}}"#
            )),
            Ok(Command::Resume {
                token: "t".into(),
                session_id: sid,
                seq: 7
            })
        );
        match decode(r#" {"op":"ping","data":{"message":"hi \u00e9"}}"#) {
            Ok(Command::Ping { data }) => assert_eq!(pong(&data), r#"{"op":"pong","data":{"message":"hi \u00e9"}}"#),
            other => panic!("{other:?}"),
        }
        let c = ChannelId::new();
        assert_eq!(
            decode(&format!(r#"{{"op":"typing.start","data":{{"channelId":"{c}"}}}}"#)),
            Ok(Command::TypingStart { channel_id: c })
        );
        assert_eq!(decode(r#"{"op":"whatever"}"#), Ok(Command::Unknown));
        assert_eq!(decode(r#"{"op":"w\u0061t"}"#), Ok(Command::Unknown));
    }

    #[test]
    fn invalid_data_is_not_a_decode_error() {
        for (frame, op) in [
            (
                r#"{"op":"typing.start","data":{"channelId":"nope"}}"#,
                KnownOp::TypingStart,
            ),
            (r#"{"op":"typing.start","data":{"channelId":5}}"#, KnownOp::TypingStart),
            (r#"{"op":"typing.start"}"#, KnownOp::TypingStart),
            (r#"{"op":"ping","data":"x"}"#, KnownOp::Ping),
            (r#"{"op":"authenticate","data":{}}"#, KnownOp::Authenticate),
            (
                r#"{"op":"resume","data":{"token":"t","sessionId":"x","seq":1}}"#,
                KnownOp::Resume,
            ),
            (
                r#"{"op":"resume","data":{"token":"t","sessionId":"0190d3b4-2a9e-7000-8000-000000000000","seq":-1}}"#,
                KnownOp::Resume,
            ),
        ] {
            assert_eq!(decode(frame), Ok(Command::Invalid(op)), "{frame}");
        }
    }

    #[test]
    fn decode_errors() {
        for (frame, err) in [
            ("", DecodeError::NotAnObject),
            ("nope", DecodeError::NotAnObject),
            ("[\"op\"]", DecodeError::NotAnObject),
            ("\"ping\"", DecodeError::NotAnObject),
            ("{\"op\":", DecodeError::NotAnObject),
            ("{}", DecodeError::MissingOp),
            (r#"{"data":{}}"#, DecodeError::MissingOp),
            (r#"{"op":1}"#, DecodeError::MissingOp),
            (r#"{"op":null}"#, DecodeError::MissingOp),
            (r#"{"op":"a","op":"b"}"#, DecodeError::MissingOp),
        ] {
            assert_eq!(decode(frame), Err(err), "{frame:?}");
        }
    }

    proptest::proptest! {
        /// `decode` is total: arbitrary text and arbitrary JSON-ish text never panic, and a
        /// decoded `ping` echoes valid JSON (the fuzz target checks the same, at length).
        #[test]
        fn decode_never_panics(text in ".{0,300}", op in "[a-z.]{0,14}", data in ".{0,80}") {
            let _ = decode(&text);
            for frame in [
                format!(r#"{{"op":"{op}","data":{data}}}"#),
                format!(r#"{{"op":{data}}}"#),
                format!(r#"{{"op":"ping","data":{{"message":{data}}}}}"#),
            ] {
                if let Ok(Command::Ping { data }) = decode(&frame) {
                    proptest::prop_assert!(serde_json::from_str::<serde_json::Value>(&pong(&data)).is_ok());
                }
            }
        }
    }

    #[test]
    fn control_frames() {
        assert_eq!(
            control(
                "resync",
                &ResyncPayload {
                    reason: "bus_reconnected".into()
                }
            ),
            r#"{"op":"resync","data":{"reason":"bus_reconnected"}}"#
        );
        assert_eq!(
            control(
                "invalidSession",
                &InvalidSessionPayload {
                    reason: InvalidReason::SeqOutOfRange
                }
            ),
            r#"{"op":"invalidSession","data":{"reason":"seq_out_of_range"}}"#
        );
    }
}
