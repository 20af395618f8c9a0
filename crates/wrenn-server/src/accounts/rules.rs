//! What account fields must look like: emails, passwords, display names.

use super::common_passwords;
use crate::error::{ApiError, Result};

/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (hashing cost stays bounded).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// Longest user, team or key name.
const MAX_NAME_CHARS: usize = 100;

/// An email address, trimmed and lower-cased, or `invalid_request`.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    let bad = || ApiError::InvalidRequest(format!("{raw:?} is not a valid email address"));
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    let labels_ok = domain.split('.').count() >= 2 && domain.split('.').all(|l| !l.is_empty());
    let chars_ok = email
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '<' | '>' | ',' | ';'));
    if local.is_empty()
        || local.len() > 64
        || email.len() > 254
        || domain.contains('@')
        || !labels_ok
        || !chars_ok
    {
        return Err(bad());
    }
    Ok(email)
}

/// The password rules: 8 to 256 characters, not a common password (or one character
/// repeated), and not the email or its name part.
pub fn check_password(password: &str, email: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(ApiError::InvalidRequest(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let lower = password.to_lowercase();
    let local = email.split('@').next().unwrap_or(email);
    if lower == email || lower.contains(email) || (local.chars().count() >= 4 && lower == local) {
        return Err(ApiError::InvalidRequest(
            "the password must not be the email address".into(),
        ));
    }
    let mut chars = lower.chars();
    let first = chars.next();
    if common_passwords::is_common(&lower) || chars.all(|c| Some(c) == first) {
        return Err(ApiError::InvalidRequest(
            "this password is too common; choose another (a few unrelated words make a good one)"
                .into(),
        ));
    }
    Ok(())
}

/// A display name: trimmed, 1..=100 characters, no control characters.
pub(super) fn clean_name(raw: &str, what: &str) -> Result<String> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(format!(
            "{what} must have 1 to {MAX_NAME_CHARS} characters and no control characters"
        )));
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "ada@exa@mple.com",
            "a da@example.com",
            "ada@example..com",
            "ada@.example.com",
            "<ada>@example.com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(normalize_email(&long).is_err());
    }

    #[test]
    fn passwords_and_names() {
        let e = "ada.lovelace@example.com";
        assert!(check_password("1234567", e).is_err());
        assert!(check_password("correct horse", e).is_ok());
        assert!(check_password("ééééééé", e).is_err()); // characters, not bytes
        assert!(check_password("éèéèéèéè", e).is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_CHARS + 1), e).is_err());
        // Common passwords, in any case, and one character repeated.
        for common in [
            "password",
            "Password",
            "PASSWORD1",
            "12345678",
            "qwertyuiop",
            "aaaaaaaaaa",
        ] {
            assert!(check_password(common, e).is_err(), "{common}");
        }
        // Not the email, nor its name part.
        assert!(check_password("ada.lovelace@example.com", e).is_err());
        assert!(check_password("Ada.Lovelace", e).is_err());
        assert!(check_password("my ada.lovelace@example.com!", e).is_err());
        assert_eq!(clean_name("  Ada ", "name").unwrap(), "Ada");
        assert!(clean_name("   ", "name").is_err());
        assert!(clean_name("a\nb", "name").is_err());
        assert!(clean_name(&"n".repeat(101), "name").is_err());
    }
}
