//! The capsule lifecycle: `pending → starting → running ⇄ paused`, `running|paused → stopped`,
//! any → `error`. One exhaustive `match` decides every transition.

use serde::{Deserialize, Serialize};

/// Where a capsule is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CapsuleStatus {
    Pending,
    Starting,
    Running,
    Paused,
    Stopped,
    Error,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} capsule cannot {transition:?}")]
pub struct TransitionError {
    pub from: CapsuleStatus,
    pub transition: Transition,
}

impl std::fmt::Display for CapsuleStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CapsuleStatus::Pending => "pending",
            CapsuleStatus::Starting => "starting",
            CapsuleStatus::Running => "running",
            CapsuleStatus::Paused => "paused",
            CapsuleStatus::Stopped => "stopped",
            CapsuleStatus::Error => "error",
        })
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
            (Pending | Starting | Running | Paused | Stopped | Error, T::Fail) => Some(Error),
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
    fn transition_table() {
        let states = [Pending, Starting, Running, Paused, Stopped, Error];
        let transitions = [T::Start, T::Ready, T::Pause, T::Resume, T::Stop, T::Fail];
        let allowed = [
            (Pending, T::Start, Starting),
            (Starting, T::Ready, Running),
            (Running, T::Pause, Paused),
            (Paused, T::Resume, Running),
            (Running, T::Stop, Stopped),
            (Paused, T::Stop, Stopped),
            (Error, T::Stop, Stopped),
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
