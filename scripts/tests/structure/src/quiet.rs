pub struct Quiet(pub crate::a::A);
