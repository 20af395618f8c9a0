//! The crate root: it may use any module, and any module may use it.

mod a;
mod b;
mod parent;
mod quiet;
mod ring;

use crate::a::A;

pub fn root() -> A {
    A
}

mod table;
mod user;

pub use table::table;
