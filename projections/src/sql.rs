//! SQL helpers shared by the projections: multi-row statements and keyset pages.

/// `(CAST($1 AS t1), ...), (...)`: `rows` tuples of placeholders with the given column types,
/// numbered from `$1`. The casts give PostgreSQL the types of a VALUES list whose parameters
/// could be NULL; SQLite reads them as type affinities.
pub(crate) fn values(rows: usize, types: &[&str]) -> String {
    let mut out = String::with_capacity(rows * types.len() * 24);
    let mut n = 0;
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for (i, t) in types.iter().enumerate() {
            n += 1;
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("CAST(${n} AS {t})"));
        }
        out.push(')');
    }
    out
}

/// Rows per multi-row statement: at a dozen parameters a row, far below SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement.
pub(crate) const ROWS_PER_STATEMENT: usize = 1_000;

/// A page from rows fetched with `LIMIT first + 1`: the first `first` of them, and whether
/// another page follows (the one extra row says so without a count query).
pub fn take_page<T>(mut rows: Vec<T>, first: usize) -> (Vec<T>, bool) {
    let more = rows.len() > first;
    rows.truncate(first);
    (rows, more)
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_placeholders_across_rows() {
        assert_eq!(
            super::values(2, &["text", "bigint"]),
            "(CAST($1 AS text), CAST($2 AS bigint)), (CAST($3 AS text), CAST($4 AS bigint))"
        );
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        assert_eq!(super::take_page(vec![1, 2, 3], 2), (vec![1, 2], true));
        assert_eq!(super::take_page(vec![1, 2], 2), (vec![1, 2], false));
    }
}
