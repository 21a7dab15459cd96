//! Container logs as the runtime writes them (the CRI log format: one record per line,
//! `<RFC 3339 nano time> <stdout|stderr> <P|F> <text>`, `P` for a partial line) turned back
//! into what `kubectl logs` prints, with `tailLines`, `sinceTime`, `timestamps` and
//! `limitBytes`.

use jiff::Timestamp;

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
}

/// Decodes one CRI log line (without its newline); `None` for a malformed one.
pub fn parse_line(line: &str) -> Option<Record<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag.split(':').next() == Some("P"),
        text,
    })
}

/// What to keep and how to print it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tail_lines: Option<usize>,
    pub since: Option<Timestamp>,
    pub timestamps: bool,
}

/// Renders `content` (whole CRI log lines) as `kubectl logs` output.
pub fn render(content: &str, o: &Options) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut pending: Option<(String, String)> = None; // (time, text so far)
    for raw in content.lines() {
        let Some(r) = parse_line(raw) else { continue };
        if let Some(since) = o.since
            && r.time.parse::<Timestamp>().is_ok_and(|t| t < since)
        {
            continue;
        }
        let (time, mut text) = pending
            .take()
            .unwrap_or_else(|| (r.time.to_string(), String::new()));
        text.push_str(r.text);
        if r.partial {
            pending = Some((time, text));
            continue;
        }
        lines.push(if o.timestamps {
            format!("{time} {text}\n")
        } else {
            format!("{text}\n")
        });
    }
    if let Some((time, text)) = pending {
        lines.push(if o.timestamps {
            format!("{time} {text}")
        } else {
            text
        });
    }
    let start = o.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    lines[start..].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-11-23T05:00:00.000000001Z stdout F one\n\
2026-11-23T05:00:01.000000000Z stderr F two\n\
2026-11-23T05:00:02.000000000Z stdout P thr\n\
2026-11-23T05:00:02.500000000Z stdout F ee\n\
2026-11-23T05:00:03.000000000Z stdout F \n";

    #[test]
    fn records_become_lines_and_partials_join() {
        assert_eq!(render(LOG, &Options::default()), "one\ntwo\nthree\n\n");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let o = Options {
            tail_lines: Some(2),
            ..Options::default()
        };
        assert_eq!(render(LOG, &o), "three\n\n");
        let o = Options {
            tail_lines: Some(0),
            ..Options::default()
        };
        assert_eq!(render(LOG, &o), "");
    }

    #[test]
    fn since_drops_older_records_and_timestamps_prefix_each_line() {
        let o = Options {
            since: Some("2026-11-23T05:00:01Z".parse().expect("ts")),
            timestamps: true,
            ..Options::default()
        };
        assert_eq!(
            render(LOG, &o),
            "2026-11-23T05:00:01.000000000Z two\n2026-11-23T05:00:02.000000000Z three\n2026-11-23T05:00:03.000000000Z \n"
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("t stdin F x"), None);
        assert_eq!(
            render(
                "nonsense\n2026-11-23T05:00:00Z stdout F ok\n",
                &Options::default()
            ),
            "ok\n"
        );
    }
}
