use super::P;

pub struct C;

pub fn p() -> crate::parent::P {
    P
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parent::child::C;

    fn both() -> (P, C) {
        (super::super::P, C)
    }
}
