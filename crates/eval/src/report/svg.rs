//! Small inline SVG charts for the HTML report (no scripts, no network: they render anywhere).

use std::fmt::Write;

const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Escapes text for XML/HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A grouped bar chart: one group per category, one bar per series; values in [0, 100], `None`
/// leaves a gap.
pub fn grouped_bars(
    title: &str,
    categories: &[String],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let (width, height, left, bottom, top) = (920.0, 320.0, 40.0, 70.0, 30.0);
    let plot_h = height - bottom - top;
    let group_w = (width - left - 10.0) / categories.len().max(1) as f64;
    let bar_w = (group_w * 0.8) / series.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{}" role="img" aria-label="{t}"><title>{t}</title>"#,
        height + 18.0 * series.len().div_ceil(3) as f64,
        t = escape(title)
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for tick in [0, 25, 50, 75, 100] {
        let y = top + plot_h * (1.0 - tick as f64 / 100.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="10" text-anchor="end">{tick}</text>"##,
            width - 10.0,
            left - 4.0,
            y + 3.0
        );
    }
    for (c, name) in categories.iter().enumerate() {
        let gx = left + group_w * c as f64 + group_w * 0.1;
        for (k, (series_name, values)) in series.iter().enumerate() {
            if let Some(Some(v)) = values.get(c) {
                let h = plot_h * v.clamp(0.0, 100.0) / 100.0;
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}, {}: {v:.2}</title></rect>"#,
                    gx + bar_w * k as f64,
                    top + plot_h - h,
                    bar_w.max(1.0) - 1.0,
                    PALETTE[k % PALETTE.len()],
                    escape(series_name),
                    escape(name)
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            gx + group_w * 0.4,
            top + plot_h + 14.0,
            escape(name)
        );
    }
    for (k, (name, _)) in series.iter().enumerate() {
        let x = left + (k % 3) as f64 * 290.0;
        let y = height - 30.0 + 18.0 * (k / 3) as f64;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            y - 10.0,
            PALETTE[k % PALETTE.len()],
            x + 16.0,
            y,
            escape(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// A histogram of `values` in `bins` equal-width bins.
pub fn histogram(title: &str, unit: &str, values: &[usize], bins: usize) -> String {
    let (width, height, left, bottom, top) = (920.0, 260.0, 50.0, 40.0, 30.0);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let bins = bins.max(1);
    let bin_w = (max as f64 / bins as f64).max(1.0);
    let mut counts = vec![0usize; bins];
    for &v in values {
        let b = ((v as f64 / bin_w) as usize).min(bins - 1);
        counts[b] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(0).max(1);
    let plot_w = width - left - 10.0;
    let plot_h = height - bottom - top;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{t}"><title>{t}</title><text x="{left}" y="18" font-size="14" font-weight="bold">{t}</text>"#,
        t = escape(title)
    );
    for (i, &c) in counts.iter().enumerate() {
        let h = plot_h * c as f64 / peak as f64;
        let x = left + plot_w * i as f64 / bins as f64;
        let _ = write!(
            s,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="#1f77b4"><title>{:.0}-{:.0} {unit}: {c}</title></rect>"##,
            top + plot_h - h,
            plot_w / bins as f64 - 1.0,
            bin_w * i as f64,
            bin_w * (i + 1) as f64
        );
    }
    let _ = write!(
        s,
        r#"<text x="{left}" y="{:.1}" font-size="10">0</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{max} {unit}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{peak} outputs</text>"#,
        top + plot_h + 14.0,
        width - 10.0,
        top + plot_h + 14.0,
        left - 4.0,
        top + 8.0
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_well_formed_and_escaped() {
        let svg = grouped_bars(
            "F1 <prompt>",
            &["A&B".into()],
            &[("run".into(), vec![Some(50.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("F1 &lt;prompt&gt;") && svg.contains("A&amp;B"));
        assert!(svg.contains("run, A&amp;B: 50.00"));
        let h = histogram("lengths", "tokens", &[1, 2, 3, 300], 10);
        assert_eq!(h.matches("<rect").count(), 10);
        assert!(histogram("empty", "tokens", &[], 5).contains("</svg>"));
    }
}
