//! The two text formats a scraper may ask for: OpenMetrics, or the Prometheus 0.0.4
//! text that older scrapers and promtool read; chosen by `Accept`.

use super::Telemetry;

impl Telemetry {
    /// The OpenMetrics text exposition (what `prometheus-client` writes).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.0.registry);
        text
    }

    /// The Prometheus text format 0.0.4, for scrapers that ask for it: the OpenMetrics
    /// exposition with each counter's HELP and TYPE under its sample name (`x_total`), no
    /// UNIT lines and no `# EOF`.
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }
}

/// See [`Telemetry::encode_prometheus`].
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The exposition a scrape's `Accept` asks for: OpenMetrics when it names
/// `application/openmetrics-text`, else the Prometheus text format 0.0.4 (what a plain
/// `text/plain;version=0.0.4`, `*/*` or no header means). Returns the body and its
/// Content-Type.
pub fn negotiate_metrics(telemetry: &Telemetry, accept: Option<&str>) -> (String, &'static str) {
    // The highest q given to each of the two formats (absent: not asked for).
    let mut best = (0.0f32, 0.0f32);
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => best.0 = best.0.max(q),
            "text/plain" => best.1 = best.1.max(q),
            _ => {}
        }
    }
    let openmetrics = best.0 > 0.0 && best.0 >= best.1;
    if openmetrics {
        (
            telemetry.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            telemetry.encode_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    }
}
