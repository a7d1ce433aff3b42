//! `dead-letters list`: a table of the selected letters, oldest first, with how far the
//! topic was read; or one JSON object per letter.

use super::letter::Letter;
use super::{select, Filter};
use crate::commands::timestamp::format_ms;
use crate::config::Config;

const HEADER: [&str; 7] = [
    "POSITION",
    "DEAD-LETTERED",
    "INTEGRATION",
    "ORIGIN",
    "STAGE",
    "REDRIVEN",
    "ERROR",
];

/// Prints the letters `filter` selects; returns how many.
pub async fn list(config: &Config, filter: &Filter, json: bool) -> anyhow::Result<usize> {
    let (scan, mut letters) = select(config, filter).await?;
    letters.sort_by_key(|l| (l.dead_lettered_ms, l.partition_in_dlq, l.offset_in_dlq));
    if json {
        for l in &letters {
            println!("{}", serde_json::to_string(l)?);
        }
    } else {
        print!("{}", table(&letters));
    }
    eprintln!("{scan}");
    Ok(letters.len())
}

fn row(l: &Letter) -> [String; 7] {
    let time = |ms: Option<i64>| ms.map_or("-".into(), format_ms);
    [
        format!("{}:{}", l.partition_in_dlq, l.offset_in_dlq),
        time(l.dead_lettered_ms),
        l.integration.clone(),
        format!(
            "{}/{}@{}",
            l.topic,
            l.partition.map_or("?".into(), |p| p.to_string()),
            l.offset.map_or("?".into(), |o| o.to_string())
        ),
        l.stage.clone(),
        l.redriven
            .as_ref()
            .map_or("-".into(), |r| format!("{} to {}", time(r.at_ms), r.to)),
        l.error.replace(['\n', '\t'], " "),
    ]
}

/// The header and a row per letter.
fn table(letters: &[Letter]) -> String {
    let rows: Vec<[String; 7]> = letters.iter().map(row).collect();
    crate::commands::table::render(HEADER, &rows)
}

#[cfg(test)]
mod tests {
    use super::super::letter::Redrive;
    use super::super::tests::letter;
    use super::table;

    #[test]
    fn the_table_has_a_header_rfc3339_times_and_marks_a_redrive() {
        let mut redriven = letter();
        redriven.offset_in_dlq = 5;
        redriven.redriven = Some(Redrive {
            of: (0, 5),
            at_ms: Some(1_700_000_000_000),
            to: "t/1@12".into(),
        });
        let text = table(&[letter(), redriven]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("POSITION  DEAD-LETTERED"), "{text}");
        assert!(lines[1].contains("1970-01-01T00:00:01.000Z"), "{text}");
        assert!(lines[1].contains("  -  "), "not redriven: {text}");
        assert!(
            lines[2].contains("2023-11-14T22:13:20.000Z to t/1@12"),
            "{text}"
        );
        assert!(lines[2].ends_with("bad"), "{text}");
        let column = |l: &str| l.find("DEAD").or_else(|| l.find("1970"));
        assert_eq!(column(lines[0]), column(lines[1]), "{text}");
    }
}
