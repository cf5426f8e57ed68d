//! The dashboard and the HTML report: one self-contained page (HTML, CSS,
//! the app's JavaScript and the vendored uPlot chart library, all inline),
//! so the live page needs one request and the report opens offline from a
//! file. The page reads the run's event stream when it has no embedded
//! data, and draws the embedded data when it has (see `assets/app.js`).
//! A leaf: it knows nothing of runs, only of the JSON it is given.

use std::sync::LazyLock;

const PAGE: &str = include_str!("assets/page.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const UPLOT_JS: &str = include_str!("assets/vendor/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/vendor/uPlot.min.css");

/// The live dashboard page (the same bytes every time).
pub fn dashboard() -> &'static str {
    static PAGE_TEXT: LazyLock<String> = LazyLock::new(|| compose("runner", "null"));
    &PAGE_TEXT
}

/// A report page titled `title` showing `data_json`: `{"summary": ...,
/// "points": [...], "distribution": {"percentiles": [...], "ms": [...]}}`.
pub fn report(title: &str, data_json: &str) -> String {
    compose(title, data_json)
}

fn compose(title: &str, data_json: &str) -> String {
    // JSON inside <script>: a "</" would end the element early.
    let data = data_json.replace("</", "<\\/").replace("<!--", "<\\!--");
    PAGE.replacen("/*TITLE*/", &escape_html(title), 1)
        .replacen("/*UPLOT_CSS*/", UPLOT_CSS, 1)
        .replacen("/*APP_CSS*/", APP_CSS, 1)
        .replacen("/*REPORT_DATA*/", &data, 1)
        .replacen("/*UPLOT_JS*/", UPLOT_JS, 1)
        .replacen("/*APP_JS*/", APP_JS, 1)
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_whole_and_data_cannot_close_the_script() {
        let d = dashboard();
        assert!(d.contains("window.REPORT = null;"));
        assert!(d.contains("uPlot"));
        assert!(!d.contains("/*APP_JS*/"));
        let r = report("a <b>", r#"{"x": "</script><script>alert(1)</script>"}"#);
        assert!(r.contains("<title>a &lt;b&gt;</title>"));
        assert!(!r.contains("</script><script>alert(1)"));
        assert!(r.contains(r#"<\/script>"#));
    }
}
