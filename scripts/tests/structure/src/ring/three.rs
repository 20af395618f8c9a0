pub struct Three;

pub fn two() -> super::two::Two {
    super::two::Two
}
