use crate::ring::{one::One as First};

pub struct Two;

pub fn one() -> First {
    First
}
