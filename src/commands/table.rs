//! Tables for people: a header and rows in columns as wide as their widest cell, the
//! last column as long as it is (`dead-letters list`, `status`).

/// `rows` under `header`, each cell padded to its column's width but the last.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let header = header.map(String::from);
    let all = std::iter::once(&header).chain(rows);
    let mut widths = [0; N];
    for r in all.clone() {
        for (w, cell) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in all {
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == N {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ");
            }
        }
        out += "\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn columns_line_up_and_the_last_is_not_padded() {
        let text = render(
            ["A", "BEE", "C"],
            &[
                ["long cell".into(), "x".into(), "end".into()],
                ["y".into(), "z".into(), "last".into()],
            ],
        );
        assert_eq!(
            text,
            "A          BEE  C\nlong cell  x    end\ny          z    last\n"
        );
    }
}
