//! The progress line of a model download: the `fetch-model` init container prints one to its log for
//! every tenth of each file, and the operator reads the last one back from that log to show the
//! download's progress in the member's status. One format, written and parsed here.

use std::fmt;

/// What starts every progress line.
const PREFIX: &str = "downloading ";

/// How far the download of one file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownloadLine {
    pub file: String,
    pub bytes: u64,
    pub total: u64,
}

impl fmt::Display for DownloadLine {
    /// `downloading <bytes>/<total> <file>`: the file last, as it is the only part that is not a
    /// number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}/{} {}", self.bytes, self.total, self.file)
    }
}

impl DownloadLine {
    /// The line as [`Display`](fmt::Display) writes it; anything else is `None`.
    pub fn parse(line: &str) -> Option<Self> {
        let (sizes, file) = line.trim_end().strip_prefix(PREFIX)?.split_once(' ')?;
        let (bytes, total) = sizes.split_once('/')?;
        let (bytes, total) = (bytes.parse().ok()?, total.parse().ok()?);
        (!file.is_empty() && bytes <= total).then(|| DownloadLine {
            file: file.to_owned(),
            bytes,
            total,
        })
    }

    /// The last progress line of a log, other lines skipped.
    pub fn last_in(log: &str) -> Option<Self> {
        log.lines().rev().find_map(Self::parse)
    }

    /// For people: `model.safetensors 44 % (120.0 of 270.0 MiB)`.
    pub fn describe(&self) -> String {
        const MIB: f64 = 1024.0 * 1024.0;
        let percent = (self.bytes * 100).checked_div(self.total).unwrap_or(100);
        format!(
            "{} {percent} % ({:.1} of {:.1} MiB)",
            self.file,
            self.bytes as f64 / MIB,
            self.total as f64 / MIB
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_back_as_written() {
        let line = DownloadLine {
            file: "model-00001-of-00002.safetensors".into(),
            bytes: 125_829_120,
            total: 283_115_520,
        };
        assert_eq!(
            line.to_string(),
            "downloading 125829120/283115520 model-00001-of-00002.safetensors"
        );
        assert_eq!(DownloadLine::parse(&line.to_string()), Some(line.clone()));
        assert_eq!(
            line.describe(),
            "model-00001-of-00002.safetensors 44 % (120.0 of 270.0 MiB)"
        );
    }

    #[test]
    fn the_last_progress_line_of_a_log_counts_and_nothing_else_does() {
        let log = "2026-12-07T07:00:00Z INFO downloading the model\n\
                   downloading 10/100 config.json\n\
                   downloading 50/200 model.safetensors\n\
                   some other line\n";
        assert_eq!(
            DownloadLine::last_in(log),
            Some(DownloadLine {
                file: "model.safetensors".into(),
                bytes: 50,
                total: 200
            })
        );
        for malformed in [
            "downloading the model",
            "downloading 300/200 model.safetensors",
            "downloading 1/2 ",
            "downloading x/2 a",
        ] {
            assert_eq!(DownloadLine::parse(malformed), None, "{malformed}");
        }
        assert_eq!(DownloadLine::last_in("no progress yet\n"), None);
    }

    #[test]
    fn a_file_of_unknown_size_reads_as_done() {
        let line = DownloadLine {
            file: "tokenizer.json".into(),
            bytes: 0,
            total: 0,
        };
        assert!(line.describe().starts_with("tokenizer.json 100 %"));
    }
}
