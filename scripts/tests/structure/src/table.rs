use crate::user::User;

pub fn table() -> Vec<User> {
    Vec::new()
}
