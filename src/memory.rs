//! Memory of this machine and this process: the peak resident set (Linux `VmHWM`) for summaries and benchmarks,
//! the available memory (`MemAvailable`), and the up-front size checks that refuse work which cannot fit
//! (diagnostic E0112) instead of aborting in the allocator.

/// Peak resident set size in MB, if the platform reports it.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes (Linux; `None` elsewhere).
pub fn available_bytes() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes as a short human figure (`4.40 TB`, `22.9 GB`, `640 MB`), decimal units.
pub fn human(bytes: f64) -> String {
    let units = [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)];
    for (u, s) in units {
        if bytes >= s {
            let v = bytes / s;
            return if v >= 100.0 {
                format!("{v:.0} {u}")
            } else if v >= 10.0 {
                format!("{v:.1} {u}")
            } else {
                format!("{v:.2} {u}")
            };
        }
    }
    format!("{bytes:.0} B")
}

/// Refuse work whose estimated need (`bytes`) exceeds the available memory, with a diagnostic that gives the
/// estimate, what is available and what to change. `what` names the work ("the weights of `m`"), `help` says
/// what to change. Where the platform does not report available memory, nothing is refused.
pub fn ensure_fits(bytes: f64, what: &str, help: &str) -> crate::error::Result<()> {
    use crate::diagnostics::{Code, Diagnostic};
    let Some(avail) = available_bytes() else { return Ok(()) };
    if bytes <= avail as f64 {
        return Ok(());
    }
    Err(crate::error::Error::input(
        Diagnostic::new(
            Code::TooLarge,
            format!("{what} need about {}, {} are available", human(bytes), human(avail as f64)),
        )
        .help(help.to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(4.4e12), "4.40 TB");
        assert_eq!(human(22.9e9), "22.9 GB");
        assert_eq!(human(640e6), "640 MB");
        assert_eq!(human(12.0), "12 B");
    }

    #[test]
    fn impossible_work_is_refused_with_its_code() {
        // 1 EB exceeds any machine this runs on.
        match ensure_fits(1e18, "the test", "nothing") {
            Err(crate::error::Error::Input(d)) => assert_eq!(d[0].code, crate::diagnostics::Code::TooLarge),
            Err(e) => panic!("wrong error {e}"),
            Ok(()) => assert!(available_bytes().is_none(), "1 EB fits?"),
        }
        assert!(ensure_fits(1.0, "the test", "nothing").is_ok());
    }
}
