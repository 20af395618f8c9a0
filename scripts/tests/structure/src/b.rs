pub struct B;

pub fn a() -> super::a::A {
    super::a::A
}
