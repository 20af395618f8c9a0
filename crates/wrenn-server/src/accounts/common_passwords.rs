//! Passwords too common to accept: the most used passwords of public breach lists that meet
//! the length rule, and the project's own name. Compared lower-cased.

const COMMON: &[&str] = &[
    "password", "password1", "password12", "password123", "password1234", "passw0rd",
    "p@ssw0rd", "p@ssword", "pa$$word", "passwort", "motdepasse", "contraseña", "12345678",
    "123456789", "1234567890", "0123456789", "12345678910", "123123123", "123456123",
    "11111111", "00000000", "88888888", "87654321", "98765432", "12341234", "11223344",
    "147258369", "123454321", "1q2w3e4r", "1q2w3e4r5t", "1qaz2wsx", "zaq12wsx", "1qazxsw2",
    "qwertyui", "qwertyuiop", "qwerty123", "qwerty12", "qwerty1234", "asdfghjkl", "asdfasdf",
    "zxcvbnm1", "zxcvbnm123", "qazwsxedc", "q1w2e3r4", "q1w2e3r4t5", "a1b2c3d4", "abc12345",
    "abcd1234", "abcdefgh", "abcdefg1", "iloveyou", "iloveyou1", "iloveyou2", "sunshine",
    "sunshine1", "princess", "princess1", "football", "football1", "baseball", "basketball",
    "welcome1", "welcome123", "letmein1", "letmein123", "trustno1", "superman", "superman1",
    "starwars", "whatever", "whatever1", "admin123", "admin1234", "administrator",
    "changeme", "changeme1", "changeme123", "computer", "internet", "michelle", "jennifer",
    "jordan23", "liverpool", "chelsea1", "arsenal1", "mustang1", "shadow12", "master12",
    "dragon12", "monkey12", "michael1", "charlie1", "1234qwer", "qwer1234", "pokemon1",
    "samsung1", "google123", "facebook", "linkedin", "babygirl", "lovely12", "secret12",
    "secret123", "default1", "letmeinplease", "rootroot", "toortoor", "testtest", "test1234",
    "test12345", "guest123", "user1234", "login123", "access14", "freedom1", "hello123",
    "helloworld", "hello1234", "summer2024", "winter2024", "spring2024", "autumn2024",
    "summer2025", "winter2025", "january1", "zaq1zaq1", "qweasdzxc", "1password", "mypassword",
    "newpassword", "wrennwrenn", "wrenn123", "wrenn1234", "wrennpassword",
];

/// Whether `lower` (already lower-cased) is a common password.
pub fn is_common(lower: &str) -> bool {
    COMMON.contains(&lower)
}
