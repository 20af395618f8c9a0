//! The capsule lifecycle: `pending → starting → running ⇄ paused`, `running|paused → stopped`,
//! any → `error`. One exhaustive `match` decides every transition.

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Where a capsule is in its life. Its text form ([`CapsuleStatus::as_str`], `FromStr`, serde)
/// is lowercase: `"running"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "A capsule's status (the SDK's enum has more values; this server uses these)."
    )
)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Pending,
    Starting,
    Running,
    Paused,
    Stopped,
    Error,
    /// Its host stopped answering (missed heartbeats): the control plane does not know
    /// whether it still runs. Only the control plane uses it; the host's list decides again
    /// when the host returns.
    Missing,
}

/// Something that moves a capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Resources are being made (slot, disk, VMM).
    Start,
    /// envd answered; the capsule is usable.
    Ready,
    Pause,
    Resume,
    Stop,
    Fail,
    /// Its host became unreachable.
    Lose,
    /// Its host answered again and lists it running.
    Found,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} capsule cannot {transition:?}")]
pub struct TransitionError {
    pub from: CapsuleStatus,
    pub transition: Transition,
}

impl CapsuleStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [CapsuleStatus; 7] = [
        CapsuleStatus::Pending,
        CapsuleStatus::Starting,
        CapsuleStatus::Running,
        CapsuleStatus::Paused,
        CapsuleStatus::Stopped,
        CapsuleStatus::Error,
        CapsuleStatus::Missing,
    ];

    /// The status's text: the API's, the database's and the metrics' label.
    pub const fn as_str(self) -> &'static str {
        match self {
            CapsuleStatus::Pending => "pending",
            CapsuleStatus::Starting => "starting",
            CapsuleStatus::Running => "running",
            CapsuleStatus::Paused => "paused",
            CapsuleStatus::Stopped => "stopped",
            CapsuleStatus::Error => "error",
            CapsuleStatus::Missing => "missing",
        }
    }
}

impl std::fmt::Display for CapsuleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CapsuleStatus {
    type Err = ParseError;

    /// The exact text of [`CapsuleStatus::as_str`] (lowercase), nothing else.
    fn from_str(s: &str) -> Result<CapsuleStatus, ParseError> {
        CapsuleStatus::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseError::Status(s.to_owned()))
    }
}

impl TryFrom<String> for CapsuleStatus {
    type Error = ParseError;

    fn try_from(s: String) -> Result<CapsuleStatus, ParseError> {
        s.parse()
    }
}

impl From<CapsuleStatus> for String {
    fn from(s: CapsuleStatus) -> String {
        s.as_str().to_owned()
    }
}

impl CapsuleStatus {
    /// The state after `t`, or why `t` is not allowed now.
    pub fn apply(self, t: Transition) -> Result<CapsuleStatus, TransitionError> {
        use CapsuleStatus::*;
        use Transition as T;
        let next = match (self, t) {
            (Pending, T::Start) => Some(Starting),
            (Pending, T::Ready | T::Pause | T::Resume | T::Stop) => None,
            (Starting, T::Ready) => Some(Running),
            (Starting, T::Start | T::Pause | T::Resume | T::Stop) => None,
            (Running, T::Pause) => Some(Paused),
            (Running, T::Stop) => Some(Stopped),
            (Running, T::Start | T::Ready | T::Resume) => None,
            (Paused, T::Resume) => Some(Running),
            (Paused, T::Stop) => Some(Stopped),
            (Paused, T::Start | T::Ready | T::Pause) => None,
            (Stopped, T::Start | T::Ready | T::Pause | T::Resume | T::Stop) => None,
            (Error, T::Stop) => Some(Stopped),
            (Error, T::Start | T::Ready | T::Pause | T::Resume) => None,
            (Pending | Starting | Running, T::Lose) => Some(Missing),
            (Paused | Stopped | Error | Missing, T::Lose) => None,
            (Missing, T::Found) => Some(Running),
            (Pending | Starting | Running | Paused | Stopped | Error, T::Found) => None,
            (Missing, T::Stop) => Some(Stopped),
            (Missing, T::Start | T::Ready | T::Pause | T::Resume) => None,
            (Pending | Starting | Running | Paused | Stopped | Error | Missing, T::Fail) => {
                Some(Error)
            }
        };
        next.ok_or(TransitionError {
            from: self,
            transition: t,
        })
    }

    /// Whether the capsule holds no resources any more.
    pub fn is_final(self) -> bool {
        matches!(self, CapsuleStatus::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CapsuleStatus::*;
    use Transition as T;

    #[test]
    fn text_round_trip_lists_every_status() {
        let texts: Vec<&str> = CapsuleStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            texts,
            ["pending", "starting", "running", "paused", "stopped", "error", "missing"]
        );
        for s in CapsuleStatus::ALL {
            assert_eq!(s.as_str().parse::<CapsuleStatus>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::Value::String(s.as_str().into())
            );
            let back: CapsuleStatus =
                serde_json::from_value(serde_json::Value::String(s.as_str().into())).unwrap();
            assert_eq!(back, s);
            assert_eq!(CapsuleStatus::try_from(String::from(s)), Ok(s));
        }
        // Every variant is in ALL (a new variant breaks this match until it is listed).
        for s in CapsuleStatus::ALL {
            match s {
                Pending | Starting | Running | Paused | Stopped | Error | Missing => {}
            }
        }
        assert_eq!(CapsuleStatus::ALL.len(), 7);
    }

    #[test]
    fn other_text_is_refused() {
        for bad in [
            "", "Running", "RUNNING", " running", "running ", "pausing", "unknown",
        ] {
            let e = bad.parse::<CapsuleStatus>().unwrap_err();
            assert_eq!(e, ParseError::Status(bad.into()));
            assert!(e.to_string().contains("capsule status"), "{e}");
        }
        assert!(serde_json::from_str::<CapsuleStatus>("\"hibernated\"").is_err());
    }

    #[test]
    fn transition_table() {
        let states = CapsuleStatus::ALL;
        let transitions = [
            T::Start,
            T::Ready,
            T::Pause,
            T::Resume,
            T::Stop,
            T::Fail,
            T::Lose,
            T::Found,
        ];
        let allowed = [
            (Pending, T::Start, Starting),
            (Starting, T::Ready, Running),
            (Running, T::Pause, Paused),
            (Paused, T::Resume, Running),
            (Running, T::Stop, Stopped),
            (Paused, T::Stop, Stopped),
            (Error, T::Stop, Stopped),
            (Pending, T::Lose, Missing),
            (Starting, T::Lose, Missing),
            (Running, T::Lose, Missing),
            (Missing, T::Found, Running),
            (Missing, T::Stop, Stopped),
        ];
        for from in states {
            for t in transitions {
                let got = from.apply(t);
                let want = if t == T::Fail {
                    Some(Error)
                } else {
                    allowed
                        .iter()
                        .find(|(f, tr, _)| *f == from && *tr == t)
                        .map(|(_, _, to)| *to)
                };
                assert_eq!(got.ok(), want, "{from} --{t:?}-->");
            }
        }
        assert_eq!(serde_json::to_string(&Running).unwrap(), "\"running\"");
        assert!(Running
            .apply(T::Resume)
            .unwrap_err()
            .to_string()
            .contains("running"));
    }
}
