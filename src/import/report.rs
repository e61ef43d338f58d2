//! The import's final report: per Mikoto table, rows read, written and skipped, with a reason for
//! every skipped row and for every value that had to be changed on the way.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// One Mikoto table (or a group of its rows that goes to one alterego table).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct TableReport {
    /// Mikoto table -> alterego table(s), e.g. `"Message -> messages, imported_message_ids"`.
    pub mapping: String,
    pub read: u64,
    /// Rows written (a dry run writes and then rolls back, so these are exact there too).
    pub written: u64,
    /// Reason -> rows not written for it.
    pub skipped: BTreeMap<String, u64>,
    /// Reason -> rows written with a changed value.
    pub adjusted: BTreeMap<String, u64>,
}

impl TableReport {
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub dry_run: bool,
    /// Keyed by Mikoto table name, in import order.
    pub tables: Vec<(String, TableReport)>,
    pub seconds: f64,
}

impl Report {
    /// The entry of Mikoto table `name`, created on first use.
    pub fn table(&mut self, name: &str, mapping: &str) -> &mut TableReport {
        if let Some(i) = self.tables.iter().position(|(n, _)| n == name) {
            return &mut self.tables[i].1;
        }
        self.tables.push((
            name.to_string(),
            TableReport {
                mapping: mapping.to_string(),
                ..TableReport::default()
            },
        ));
        let last = self.tables.len() - 1;
        &mut self.tables[last].1
    }

    pub fn get(&self, name: &str) -> Option<&TableReport> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

impl TableReport {
    pub fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_string()).or_default() += 1;
    }

    pub fn skip_n(&mut self, reason: &str, n: u64) {
        if n > 0 {
            *self.skipped.entry(reason.to_string()).or_default() += n;
        }
    }

    pub fn adjust(&mut self, reason: &str) {
        *self.adjusted.entry(reason.to_string()).or_default() += 1;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "dry run (rolled back)"
        } else {
            "import"
        };
        writeln!(f, "Mikoto {verb}: {:.1} s", self.seconds)?;
        writeln!(
            f,
            "{:<24} {:>10} {:>10} {:>10}  mapping",
            "Mikoto table", "read", "written", "skipped"
        )?;
        for (name, t) in &self.tables {
            writeln!(
                f,
                "{:<24} {:>10} {:>10} {:>10}  {}",
                name,
                t.read,
                t.written,
                t.skipped_total(),
                t.mapping
            )?;
            for (reason, n) in &t.skipped {
                writeln!(f, "    skipped {n}: {reason}")?;
            }
            for (reason, n) in &t.adjusted {
                writeln!(f, "    adjusted {n}: {reason}")?;
            }
        }
        Ok(())
    }
}
