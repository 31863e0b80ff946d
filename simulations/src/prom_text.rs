//! A strict reader of the Prometheus text exposition format (version
//! 0.0.4), for tests and the bench that scrape a daemon's metrics listener: it refuses what
//! a lenient scraper would let through (a sample without its `# TYPE`, a
//! family split in two, a duplicate series, a counter not named `_total` or
//! negative, a histogram whose buckets are not cumulative or whose `+Inf`
//! bucket disagrees with `_count`), and [`scrape`] fetches a page over HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

/// A metric family's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped`.
    Untyped,
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Its name (a histogram's carry `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A metric family: its type, help and samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Declared type.
    pub kind: Kind,
    /// Help text, if given.
    pub help: Option<String>,
    /// Samples, in page order.
    pub samples: Vec<Sample>,
}

/// A whole page, by family name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// Every family declared on the page.
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// The sum of every sample named `name` whose labels include `labels`
    /// (0 if there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// Whether a family called `name` is declared.
    pub fn has(&self, name: &str) -> bool {
        self.families.contains_key(name)
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => text
            .parse::<f64>()
            .map_err(|_| format!("{text:?} is not a sample value")),
    }
}

/// `{a="x",b="y"}` at the start of `text`; returns the labels and the rest.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text.strip_prefix('{').ok_or("labels must start with {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("a label value must be quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("a bad escape in a label value: {other:?}")),
                },
                Some((_, '\n')) => return Err("a newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by commas".into());
        }
    }
}

/// The family a sample named `name` belongs to, given the declared families.
fn family_of<'a>(name: &'a str, declared: &BTreeMap<String, Family>) -> &'a str {
    if declared.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                declared.get(base).map(|f| f.kind),
                Some(Kind::Histogram | Kind::Summary)
            ) {
                return base;
            }
        }
    }
    name
}

/// Parses `text` strictly; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series: BTreeSet<(String, BTreeMap<String, String>)> = BTreeSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the page does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (keyword, name, rest) = (words.next(), words.next(), words.next());
            match (keyword, name) {
                (Some("HELP"), Some(name)) => {
                    if !valid_metric_name(name) {
                        return Err(at("a bad metric name".into()));
                    }
                    if helps
                        .insert(name.into(), rest.unwrap_or("").into())
                        .is_some()
                    {
                        return Err(at("HELP twice".into()));
                    }
                }
                (Some("TYPE"), Some(name)) => {
                    if !valid_metric_name(name) {
                        return Err(at("a bad metric name".into()));
                    }
                    let kind = match rest.map(str::trim) {
                        Some("counter") => Kind::Counter,
                        Some("gauge") => Kind::Gauge,
                        Some("histogram") => Kind::Histogram,
                        Some("summary") => Kind::Summary,
                        Some("untyped") => Kind::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    if kind == Kind::Counter && !name.ends_with("_total") {
                        return Err(at("a counter not named *_total".into()));
                    }
                    if families.contains_key(name) {
                        return Err(at("TYPE twice".into()));
                    }
                    families.insert(
                        name.into(),
                        Family {
                            kind,
                            help: None,
                            samples: Vec::new(),
                        },
                    );
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("a bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value = parse_value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at("a timestamp that is not an integer".into()))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text after the sample".into()));
        }
        let family = family_of(name, &families).to_string();
        let Some(declared) = families.get_mut(&family) else {
            return Err(at(format!("a sample of {family}, which has no # TYPE")));
        };
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("the samples of {family} are not together")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.insert(previous);
            }
        }
        if declared.kind == Kind::Counter && (value < 0.0 || value.is_nan()) {
            return Err(at("a counter below 0".into()));
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(at("the same series twice".into()));
        }
        declared.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, help) in helps {
        match families.get_mut(&name) {
            Some(f) => f.help = Some(help),
            None => return Err(format!("HELP for {name}, which has no # TYPE")),
        }
    }
    for (name, family) in &families {
        if family.kind == Kind::Histogram {
            check_histogram(name, family)?;
        }
    }
    Ok(Exposition { families })
}

/// Buckets cumulative and ending at `+Inf`, `+Inf` equal to `_count`, a `_sum`: per label set.
fn check_histogram(name: &str, family: &Family) -> Result<(), String> {
    type Key = BTreeMap<String, String>;
    let mut buckets: BTreeMap<Key, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<Key, f64> = BTreeMap::new();
    let mut sums: BTreeSet<Key> = BTreeSet::new();
    for s in &family.samples {
        let mut key = s.labels.clone();
        if s.name == format!("{name}_bucket") {
            let le = key
                .remove("le")
                .ok_or_else(|| format!("{name}: a bucket without le"))?;
            buckets
                .entry(key)
                .or_default()
                .push((parse_value(&le)?, s.value));
        } else if s.name == format!("{name}_count") {
            counts.insert(key, s.value);
        } else if s.name == format!("{name}_sum") {
            sums.insert(key);
        } else {
            return Err(format!("{name}: a histogram sample named {}", s.name));
        }
    }
    for (key, count) in &counts {
        let b = buckets
            .get(key)
            .ok_or_else(|| format!("{name}{key:?}: a count without buckets"))?;
        if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
            return Err(format!("{name}{key:?}: buckets not cumulative: {b:?}"));
        }
        match b.last() {
            Some((le, n)) if le.is_infinite() && n == count => {}
            other => {
                return Err(format!(
                    "{name}{key:?}: the last bucket {other:?} is not +Inf = count {count}"
                ))
            }
        }
        if !sums.contains(key) {
            return Err(format!("{name}{key:?}: no _sum"));
        }
    }
    if buckets.len() != counts.len() {
        return Err(format!("{name}: buckets without a count"));
    }
    Ok(())
}

/// `GET http://addr/metrics`: checks the status and the exposition content
/// type and returns the body.
pub async fn scrape(addr: SocketAddr) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut raw),
    )
    .await
    .map_err(|_| format!("{addr}: no answer in 10 s"))?
    .map_err(|e| e.to_string())?;
    let raw = String::from_utf8(raw).map_err(|e| format!("{addr}: not UTF-8: {e}"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP header"))?;
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}: {status}"));
    }
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    if !headers
        .iter()
        .any(|h| h == "content-type: text/plain; version=0.0.4; charset=utf-8")
    {
        return Err(format!(
            "{addr}: not the text exposition format: {headers:?}"
        ));
    }
    if headers.iter().any(|h| h.starts_with("transfer-encoding")) {
        return Err(format!("{addr}: a chunked answer: {headers:?}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "# HELP a_total A.\n# TYPE a_total counter\na_total{g=\"x\\\"y\"} 2\na_total{g=\"z\"} 1\n\
# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 3\nh_sum 0.5\nh_count 3\n\
# TYPE g gauge\ng NaN\n";

    #[test]
    fn a_good_page_parses_and_sums() {
        let page = parse(GOOD).expect("parses");
        assert_eq!(page.sum("a_total", &[]), 3.0);
        assert_eq!(page.sum("a_total", &[("g", "x\"y")]), 2.0);
        assert_eq!(page.sum("h_count", &[]), 3.0);
        assert_eq!(page.families["a_total"].help.as_deref(), Some("A."));
    }

    #[test]
    fn what_a_lenient_reader_would_take_is_refused() {
        let bad = [
            ("a_total 1\n", "no # TYPE"),
            ("# TYPE a counter\na 1\n", "_total"),
            ("# TYPE a_total counter\na_total -1\n", "below 0"),
            ("# TYPE a_total counter\na_total 1\na_total 2\n", "twice"),
            (
                "# TYPE a_total counter\na_total{x=\"1\"} 1\n# TYPE g gauge\ng 1\na_total{x=\"2\"} 1\n",
                "not together",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
                "cumulative",
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
                "+Inf",
            ),
            ("# TYPE g gauge\ng{a=\"1\" 1\n", "label"),
            ("# TYPE g gauge\ng 1 2 3\n", "trailing"),
            ("# TYPE g gauge\ng 1", "newline"),
        ];
        for (page, why) in bad {
            let e = parse(page).expect_err(page);
            assert!(e.contains(why), "{page:?}: {e}");
        }
    }
}
