use crate::b::B;

// crate::quiet::Quiet is named here in a comment only.
pub struct A;

pub fn text() -> &'static str {
    "super::quiet::Quiet"
}

pub fn b() -> B {
    B
}
