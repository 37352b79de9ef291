//! Domain types that every Portcullis crate shares and that belong to none of them alone.
//!
//! This crate owns the [`Identity`] of an authenticated user, the source of secure
//! randomness, constant-time comparison and the wall clock. It has no I/O and knows nothing
//! about HTTP, configuration or storage.
#![forbid(unsafe_code)]

pub mod html;
mod identity;
pub mod random;
pub mod seal;
pub mod time;
pub mod trace;

pub use identity::{ClaimValue, Identity, IdentityFields, provider_name};

/// Compares two byte strings in time that depends only on their lengths, never on where
/// they first differ. Use it for every comparison involving a secret (state, passwords,
/// bearer tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_matches_only_identical_input() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"xbc", b"abc"));
    }
}
