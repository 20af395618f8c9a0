mod child;

pub use self::child::C;

pub struct P;

pub fn c() -> C {
    crate::parent::child::C
}
