//! `burghers settings`: every tunable with its default and meaning, from the one declaration
//! in `control::settings`.

use control::settings::{ALL, Setting};

#[derive(clap::Args)]
#[command(after_help = "\
Examples:
  burghers settings                 # every setting
  burghers settings relay           # the settings of one section (or whose name contains it)")]
pub struct SettingsArgs {
    /// Only the settings whose section or name contains this (case-insensitive).
    #[arg(value_name = "FILTER")]
    filter: Option<String>,
}

pub fn run(args: SettingsArgs) -> Result<(), String> {
    let filter = args.filter.map(|f| f.to_ascii_lowercase());
    let chosen: Vec<&Setting> = ALL
        .iter()
        .filter(|s| filter.as_ref().is_none_or(|f| s.key().contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return Err(format!(
            "no setting matches {:?}; sections: {}",
            filter.unwrap_or_default(),
            sections().join(", ")
        ));
    }
    print!("{}", render(&chosen));
    Ok(())
}

fn sections() -> Vec<&'static str> {
    let mut names: Vec<&str> = ALL.iter().map(|s| s.section).collect();
    names.dedup();
    names
}

/// One line per setting (key, default), its meaning indented below.
fn render(settings: &[&Setting]) -> String {
    let width = settings.iter().map(|s| s.key().len()).max().unwrap_or(0);
    let mut out = String::new();
    for s in settings {
        out += &format!("{:width$}  {:?}\n", s.key(), s.default);
        for line in s.meaning.lines() {
            out += &format!("    {}\n", line.trim());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_printed_with_its_default() {
        let all: Vec<&Setting> = ALL.iter().collect();
        let text = render(&all);
        assert!(text.contains("relay.cache_bytes"), "{text}");
        assert!(text.contains("network.hello_interval"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("network.mtu") && l.ends_with("1024"))
        );
        assert_eq!(sections().first(), Some(&"network"));
    }

    #[test]
    fn an_unknown_filter_names_the_sections() {
        let err = run(SettingsArgs {
            filter: Some("nothing-like-it".into()),
        })
        .expect_err("no match");
        assert!(err.contains("relay"), "{err}");
    }
}
