//! Names in management-API paths. Every path segment is percent-encoded except RFC 3986's
//! unreserved characters, so the `/` vhost becomes `%2F`, a space `%20`, and `é` `%C3%A9`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Why a name cannot be used in a management-API path.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {kind} name is empty"));
    }
    // URL parsers treat `.`/`..` (also percent-encoded) as path navigation, so such a name
    // would address another resource.
    if name == "." || name == ".." {
        return Err(format!(
            "the {kind} name {name:?} cannot be addressed in an HTTP path"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the {kind} name {name:?} contains control characters"
        ));
    }
    Ok(())
}

pub(crate) fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_names_are_encoded_as_one_segment() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("my vhost"), "my%20vhost");
        assert_eq!(segment("ünïcødé/x"), "%C3%BCn%C3%AFc%C3%B8d%C3%A9%2Fx");
        assert_eq!(segment("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(segment("100%?#&+"), "100%25%3F%23%26%2B");
    }

    #[test]
    fn dot_segments_empty_and_control_characters_are_refused() {
        assert!(check_name("vhost", ".").is_err());
        assert!(check_name("vhost", "..").is_err());
        assert!(check_name("vhost", "").is_err());
        assert!(check_name("vhost", "a\nb").is_err());
        assert!(check_name("vhost", "/").is_ok());
        assert!(check_name("vhost", "...").is_ok());
    }

    proptest::proptest! {
        #[test]
        fn encoded_segments_decode_back_and_contain_no_separator(name in "\\PC{1,40}") {
            let enc = segment(&name);
            proptest::prop_assert!(!enc.contains('/') && !enc.contains('?') && !enc.contains('#'));
            let dec = percent_encoding::percent_decode_str(&enc).decode_utf8().unwrap();
            proptest::prop_assert_eq!(dec, name);
        }
    }
}
