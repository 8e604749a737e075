//! Which metrics a PromQL expression reads, and which metrics a `/metrics` page exposes: for tests
//! that hold dashboards and alerting rules to the metrics the code really exports.
//!
//! [`metric_names`] is not a PromQL parser. It finds the metric names of the expressions this
//! project writes (selectors, aggregations, functions, binary operators, Grafana's `$variables`)
//! by dropping what cannot be a metric name: strings, label matchers `{...}`, ranges `[...]`,
//! numbers and durations, function names (an identifier followed by `(`), aggregations and
//! keywords, and the label lists after `by`, `without`, `on`, `ignoring`, `group_left` and
//! `group_right`.

use std::collections::BTreeSet;

/// Keywords, operators and aggregations (which may be followed by `by (...)` rather than `(`)
/// that read like identifiers.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "Inf",
    "NaN",
    "atan2",
    "start",
    "end",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names `expr` selects.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    // Set after a keyword that a label list follows: the next `( ... )` holds label names.
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_quoted(&chars, i),
            '{' => i = skip_to(&chars, i, '}'),
            '[' => i = skip_to(&chars, i, ']'),
            '#' => {
                // A comment runs to the end of the line.
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '(' if skip_list => {
                i = skip_to(&chars, i, ')');
                skip_list = false;
            }
            '$' => {
                // A Grafana variable: `$name`, `${name}` or `${name:format}`.
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_to(&chars, i, '}');
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || (c == '.' && next_is_digit(&chars, i)) => {
                // A number or a duration (`0.5`, `1e3`, `5m`, `1h30m`).
                while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                    i += 1;
                }
            }
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let called = chars.get(j) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    skip_list = called;
                } else if !called && !KEYWORDS.contains(&word.as_str()) {
                    out.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The sample names a `/metrics` page exposes: every name with a sample line, and for
/// OpenMetrics text (it ends with `# EOF`) also the names each `# TYPE` line implies, so a family
/// without samples yet still counts (`counter` → `_total`, `histogram` → `_bucket`, `_sum`,
/// `_count`, `info` → `_info`, `gauge` and others → the name itself).
pub fn exposed_names(text: &str) -> BTreeSet<String> {
    let open_metrics = text.trim_end().ends_with("# EOF");
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if !open_metrics {
                continue;
            }
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    out.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{suffix}"));
                    }
                }
                "info" => {
                    out.insert(format!("{name}_info"));
                }
                _ => {
                    out.insert(name.to_string());
                }
            }
        } else if !line.is_empty() && !line.starts_with('#') {
            let end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len());
            out.insert(line[..end].to_string());
        }
    }
    out
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn next_is_digit(chars: &[char], i: usize) -> bool {
    chars.get(i + 1).is_some_and(char::is_ascii_digit)
}

/// The index after the string starting at `i` (backslash escapes honoured).
fn skip_quoted(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' if quote != '`' => j += 2,
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    j
}

/// The index after the `close` matching the opener at `i`, skipping strings and nested openers.
fn skip_to(chars: &[char], i: usize, close: char) -> usize {
    let open = chars[i];
    let mut depth = 0;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_quoted(chars, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn selectors_functions_and_aggregations() {
        assert_eq!(names("up"), ["up"]);
        assert_eq!(
            names(r#"sum by (phase) (tiermq_instances{phase!="Stable", tier=~"Sh.*"})"#),
            ["tiermq_instances"]
        );
        assert_eq!(
            names(
                "histogram_quantile(0.9, sum without (instance) \
                 (rate(tiermq_reconcile_duration_seconds_bucket[$__rate_interval])))"
            ),
            ["tiermq_reconcile_duration_seconds_bucket"]
        );
        assert_eq!(
            names("time() - tiermq_a_timestamp_seconds > 3600 and on (phase) tiermq_b == 1"),
            ["tiermq_a_timestamp_seconds", "tiermq_b"]
        );
        assert_eq!(
            names("sum(tiermq_leader) < 1 or absent(tiermq_leader)"),
            ["tiermq_leader"]
        );
        assert_eq!(
            names(
                r#"label_replace(rabbitmq_connections{namespace=~"$namespace"}, "x", "$1", "pod", "(.*)") * on(pod) group_left(tiermq_cluster) rabbitmq_identity_info"#
            ),
            ["rabbitmq_connections", "rabbitmq_identity_info"]
        );
        assert_eq!(
            names("increase(tiermq_migrations_finished_total[${__range}]) offset 1h30m"),
            ["tiermq_migrations_finished_total"]
        );
        assert_eq!(names("1e3 * .5 + 2"), Vec::<String>::new());
    }

    #[test]
    fn open_metrics_families_imply_their_sample_names() {
        let text = "# HELP tiermq_reconciles Reconciles run.\n\
                    # TYPE tiermq_reconciles counter\n\
                    # TYPE tiermq_reconcile_duration_seconds histogram\n\
                    # TYPE tiermq_build info\n\
                    # TYPE tiermq_leader gauge\n\
                    tiermq_leader 1\n\
                    # EOF\n";
        let got: Vec<String> = exposed_names(text).into_iter().collect();
        assert_eq!(
            got,
            [
                "tiermq_build_info",
                "tiermq_leader",
                "tiermq_reconcile_duration_seconds_bucket",
                "tiermq_reconcile_duration_seconds_count",
                "tiermq_reconcile_duration_seconds_sum",
                "tiermq_reconciles_total",
            ]
        );
    }

    #[test]
    fn classic_text_format_counts_sample_lines_only() {
        let text = "# TYPE rabbitmq_connections gauge\n\
                    rabbitmq_connections 3\n\
                    # TYPE rabbitmq_channels_opened_total counter\n\
                    rabbitmq_channels_opened_total{a=\"b\"} 7\n";
        let got: Vec<String> = exposed_names(text).into_iter().collect();
        assert_eq!(
            got,
            ["rabbitmq_channels_opened_total", "rabbitmq_connections"]
        );
    }
}
