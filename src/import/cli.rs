//! The arguments of `alterego import-mikoto`.

use super::{DEFAULT_BATCH, Options};

pub const USAGE: &str = "\
usage: alterego import-mikoto --source <postgres url> [--dry-run] [--allow-non-empty] [--batch-size <rows>] [--json]

Copies a Mikoto server's PostgreSQL database into alterego's (DATABASE_URL, migrated first).

  --source <url>       the Mikoto database, e.g. postgres://mikoto@db:5432/mikoto. It is only read,
                       in one read-only REPEATABLE READ snapshot, so Mikoto may keep running
                       during a dry run.
  --dry-run            import everything, print the report, then roll back: nothing is written.
  --allow-non-empty    import into a database that already has users; rows that collide with
                       existing ones are skipped and counted. Without it a non-empty target is refused.
  --batch-size <rows>  rows per insert of messages and attachments (default 5000).
  --json               print the report as JSON instead of a table.

The whole import is one transaction: if it is interrupted (crash, kill, lost connection),
alterego's database is left as it was and the same command can simply be run again.

Switching a deployment:
  1. stop Mikoto (or keep it running for the dry run only);
  2. alterego import-mikoto --source $MIKOTO_DATABASE_URL --dry-run   and read the report;
  3. alterego import-mikoto --source $MIKOTO_DATABASE_URL             into an empty database;
  4. point alterego's media storage at Mikoto's bucket (keys are unchanged), start alterego,
     and point the web client at it. Users sign in again with their old passwords.

The report lists, per Mikoto table, rows read, written and skipped, with the reason of every
skip and of every value changed on the way. Details: docs/import.md.";

/// What the command line asked for.
#[derive(Debug)]
pub enum Command {
    Help,
    Import { options: Options, json: bool },
}

pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut source = None;
    let mut options = Options {
        source_url: String::new(),
        dry_run: false,
        allow_non_empty: false,
        batch_size: DEFAULT_BATCH,
        quiet: false,
    };
    let mut json = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--source" => source = Some(it.next().ok_or("--source needs a postgres url")?.clone()),
            "--dry-run" => options.dry_run = true,
            "--allow-non-empty" => options.allow_non_empty = true,
            "--json" => json = true,
            "--batch-size" => {
                let raw = it.next().ok_or("--batch-size needs a number")?;
                options.batch_size = raw
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| format!("--batch-size must be 1 to 100000, not `{raw}`"))?;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    options.source_url = source.ok_or("--source <postgres url> is required")?;
    Ok(Command::Import { options, json })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_flags() {
        let Ok(Command::Import { options, json }) =
            parse(&args(&["--source", "postgres://x/y", "--dry-run", "--json"]))
        else {
            panic!("not parsed");
        };
        assert!(options.dry_run && json && !options.allow_non_empty);
        assert_eq!(options.source_url, "postgres://x/y");
        assert!(matches!(parse(&args(&["--help"])), Ok(Command::Help)));
        assert!(parse(&args(&[])).is_err());
        assert!(parse(&args(&["--source"])).is_err());
        assert!(parse(&args(&["--source", "u", "--batch-size", "0"])).is_err());
        assert!(parse(&args(&["--source", "u", "--bogus"])).is_err());
    }
}
