use super::{three::Three, *};

pub struct One;

pub fn three() -> Three {
    Three
}
