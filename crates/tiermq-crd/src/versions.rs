//! RabbitMQ releases as broker images name them, and which image changes a running cluster can
//! take in place. Pure facts shared by the operator (placement rules, the rolling upgrade of a
//! cluster's image) and its docs.
//!
//! In-place upgrades follow RabbitMQ's upgrade guide: a cluster moves one minor release at a time
//! (3.10 → 3.11 → 3.12 → 3.13 → 4.0 → 4.1 …), RabbitMQ 4.0 only from 3.13, with every stable
//! feature flag enabled before the new release starts (3.11 and later refuse to start otherwise);
//! patch releases within a minor may change freely. Downgrades are not supported in place. A
//! tenant skips all of this by converting to a cluster of the new release (blue-green, per
//! tenant): a conversion may cross any releases the operator was tested with.

use std::fmt;

/// The oldest RabbitMQ release the project tests: the release series of Debian 12's package.
pub const OLDEST_TESTED: RabbitVersion = RabbitVersion {
    major: 3,
    minor: Some(10),
};

/// A RabbitMQ release as an image tag names it: the major version and, when the tag names one,
/// the minor (`rabbitmq:4` names 4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RabbitVersion {
    /// Major release (3, 4).
    pub major: u32,
    /// Minor release, when the tag names one.
    pub minor: Option<u32>,
}

impl fmt::Display for RabbitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.minor {
            Some(m) => write!(f, "{}.{m}", self.major),
            None => write!(f, "{}", self.major),
        }
    }
}

/// The RabbitMQ release an image's tag names (`rabbitmq:3.10-management` → 3.10,
/// `registry:5000/rabbitmq:4.0.5@sha256:…` → 4.0, `rabbitmq:4-management` → 4); `None` for a tag
/// that names no version (`latest`, `management`, none, a digest only).
pub fn image_version(image: &str) -> Option<RabbitVersion> {
    let named = image.split('@').next()?;
    let last = named.rsplit('/').next()?;
    let (_, tag) = last.split_once(':')?;
    let (major, rest) = number(tag)?;
    if !(rest.is_empty() || rest.starts_with(['.', '-'])) {
        return None;
    }
    let minor = rest.strip_prefix('.').and_then(|r| {
        let (m, after) = number(r)?;
        (after.is_empty() || after.starts_with(['.', '-'])).then_some(m)
    });
    Some(RabbitVersion { major, minor })
}

/// A leading decimal number and what follows it.
fn number(s: &str) -> Option<(u32, &str)> {
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    Some((s[..digits].parse().ok()?, &s[digits..]))
}

/// Why a running cluster cannot change its image from `from` to `to` in place, if it cannot
/// (see the module docs). `None` when the change is supported, or when either tag names no
/// version exactly enough to judge (the operator then cannot tell and lets it through).
pub fn in_place_upgrade_problem(from: &str, to: &str) -> Option<String> {
    let (a, b) = (image_version(from)?, image_version(to)?);
    let (Some(am), Some(bm)) = (a.minor, b.minor) else {
        return None;
    };
    let tail = "RabbitMQ cannot change a running cluster's data across that in place; move \
                tenants to a new cluster instead (a SharedCluster of the new image, then a \
                tier conversion per instance)";
    if (b.major, bm) < (a.major, am) {
        return Some(format!(
            "image {to:?} ({b}) is older than the running {from:?} ({a}): downgrades are not \
             supported in place; {tail}"
        ));
    }
    let next_ok = if b.major == a.major {
        bm <= am + 1
    } else {
        // Into a new major only from the last minor of the previous one, and only to its .0.
        b.major == a.major + 1 && bm == 0 && last_minor(a.major).is_some_and(|last| am == last)
    };
    if next_ok {
        return None;
    }
    let via = match last_minor(a.major) {
        Some(last) if b.major > a.major && am < last => {
            format!("upgrade to {}.{} first, one minor at a time", a.major, last)
        }
        _ if b.major > a.major => format!("upgrade to {}.0 first", a.major + 1),
        _ => format!("upgrade to {}.{} first", a.major, am + 1),
    };
    Some(format!(
        "image {to:?} ({b}) cannot replace the running {from:?} ({a}) in place: RabbitMQ \
         upgrades one minor release at a time{}; {via}, or {tail}",
        if b.major > a.major {
            format!(
                " and reaches {}.0 only from {}.{}",
                a.major + 1,
                a.major,
                last_minor(a.major).unwrap_or(0)
            )
        } else {
            String::new()
        }
    ))
}

/// The last minor release of a major series, for the series that ended.
fn last_minor(major: u32) -> Option<u32> {
    match major {
        3 => Some(13),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: Option<u32>) -> Option<RabbitVersion> {
        Some(RabbitVersion { major, minor })
    }

    #[test]
    fn tags_name_releases() {
        assert_eq!(image_version("rabbitmq:3.10-management"), v(3, Some(10)));
        assert_eq!(image_version("rabbitmq:4.0.5"), v(4, Some(0)));
        assert_eq!(image_version("rabbitmq:4-management"), v(4, None));
        assert_eq!(
            image_version("reg.local:5000/x/rabbitmq:3.13.7-alpine@sha256:00"),
            v(3, Some(13))
        );
        for none in [
            "rabbitmq",
            "rabbitmq:latest",
            "rabbitmq:management",
            "rabbitmq@sha256:00",
            "reg.local:5000/rabbitmq",
            "rabbitmq:3x",
        ] {
            assert_eq!(image_version(none), None, "{none}");
        }
        assert_eq!(image_version("rabbitmq:3.x").map(|v| v.minor), Some(None));
        assert_eq!(OLDEST_TESTED.to_string(), "3.10");
    }

    #[test]
    fn in_place_upgrades_go_one_minor_at_a_time_and_into_4_only_from_3_13() {
        let ok = [
            ("rabbitmq:3.10-management", "rabbitmq:3.10.25-management"),
            ("rabbitmq:3.10-management", "rabbitmq:3.11-management"),
            ("rabbitmq:3.12", "rabbitmq:3.13"),
            ("rabbitmq:3.13-management", "rabbitmq:4.0-management"),
            ("rabbitmq:4.0", "rabbitmq:4.1"),
            ("rabbitmq:4.0", "rabbitmq:4.0.9"),
            // Tags that name no minor cannot be judged.
            ("rabbitmq:3.10", "rabbitmq:4-management"),
            ("rabbitmq:latest", "rabbitmq:4.0"),
        ];
        for (from, to) in ok {
            assert_eq!(in_place_upgrade_problem(from, to), None, "{from} -> {to}");
        }
        let refused = [
            (
                "rabbitmq:3.10-management",
                "rabbitmq:4.0-management",
                "3.13 first",
            ),
            ("rabbitmq:3.10", "rabbitmq:3.12", "3.11 first"),
            ("rabbitmq:3.13", "rabbitmq:4.1", "4.0 first"),
            ("rabbitmq:4.0", "rabbitmq:4.2", "4.1 first"),
            (
                "rabbitmq:4.0",
                "rabbitmq:3.13",
                "downgrades are not supported",
            ),
            (
                "rabbitmq:3.11",
                "rabbitmq:3.10",
                "downgrades are not supported",
            ),
        ];
        for (from, to, says) in refused {
            let why = in_place_upgrade_problem(from, to).unwrap_or_default();
            assert!(why.contains(says), "{from} -> {to}: {why}");
            assert!(why.contains("tier conversion per instance"), "{why}");
        }
    }
}
