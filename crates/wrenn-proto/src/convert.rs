//! The one place where the agent.v1 wire enums meet `wrenn-types`' vocabulary.

use wrenn_types::CapsuleStatus;

use crate::agent::v1::CapsuleState;

impl From<CapsuleStatus> for CapsuleState {
    fn from(s: CapsuleStatus) -> CapsuleState {
        match s {
            CapsuleStatus::Pending => CapsuleState::Pending,
            CapsuleStatus::Starting => CapsuleState::Starting,
            CapsuleStatus::Running => CapsuleState::Running,
            CapsuleStatus::Paused => CapsuleState::Paused,
            CapsuleStatus::Stopped => CapsuleState::Stopped,
            CapsuleStatus::Error => CapsuleState::Error,
            CapsuleStatus::Missing => CapsuleState::Missing,
        }
    }
}

/// An unset state (`UNSPECIFIED`, or a number this build does not know, which prost's getters
/// turn into it) reads as `pending`: the capsule exists and has not started.
impl From<CapsuleState> for CapsuleStatus {
    fn from(s: CapsuleState) -> CapsuleStatus {
        match s {
            CapsuleState::Unspecified | CapsuleState::Pending => CapsuleStatus::Pending,
            CapsuleState::Starting => CapsuleStatus::Starting,
            CapsuleState::Running => CapsuleStatus::Running,
            CapsuleState::Paused => CapsuleStatus::Paused,
            CapsuleState::Stopped => CapsuleStatus::Stopped,
            CapsuleState::Error => CapsuleStatus::Error,
            CapsuleState::Missing => CapsuleStatus::Missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::v1::Capsule;

    #[test]
    fn every_status_crosses_the_wire_and_back() {
        for s in CapsuleStatus::ALL {
            let wire = CapsuleState::from(s);
            assert_ne!(wire, CapsuleState::Unspecified);
            assert_eq!(CapsuleStatus::from(wire), s);
            let c = Capsule {
                state: wire as i32,
                ..Default::default()
            };
            assert_eq!(CapsuleStatus::from(c.state()), s);
        }
        let unknown = Capsule {
            state: 99,
            ..Default::default()
        };
        assert_eq!(CapsuleStatus::from(unknown.state()), CapsuleStatus::Pending);
        assert_eq!(
            CapsuleStatus::from(CapsuleState::Unspecified),
            CapsuleStatus::Pending
        );
    }
}
