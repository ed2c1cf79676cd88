//! SQL building shared by the projections that write many rows per statement.

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

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_placeholders_across_rows() {
        assert_eq!(
            super::values(2, &["text", "bigint"]),
            "(CAST($1 AS text), CAST($2 AS bigint)), (CAST($3 AS text), CAST($4 AS bigint))"
        );
    }
}
