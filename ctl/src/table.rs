//! The one text-table renderer, for the CLI's listings and the audit report:
//! left-aligned columns, no borders, no trailing spaces (comfy-table with the
//! `NOTHING` preset). A leaf module, so audit and CLI share it without
//! depending on each other.

use comfy_table::{presets::NOTHING, ColumnConstraint, Table as Grid, Width};

/// Columns separated by `gap` spaces, each as wide as its widest cell (or
/// its minimum width); the last column is never padded.
pub struct Table {
    grid: Grid,
    gap: u16,
    min: Vec<(usize, u16)>,
}

impl Table {
    pub fn new(gap: u16) -> Table {
        let mut grid = Grid::new();
        grid.load_preset(NOTHING);
        Table { grid, gap, min: Vec::new() }
    }

    pub fn header<S: ToString>(mut self, cells: impl IntoIterator<Item = S>) -> Table {
        self.grid.set_header(cells.into_iter().map(|c| c.to_string()));
        self
    }

    /// The first columns are at least these many characters wide, as
    /// `{:<width$}` would make them.
    pub fn min_widths(mut self, widths: &[usize]) -> Table {
        self.min.extend(widths.iter().map(|&w| u16::try_from(w).unwrap_or(u16::MAX)).enumerate());
        self
    }

    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Table {
        self.grid.add_row(cells.into_iter().map(|c| c.to_string()));
        self
    }

    /// The table, one `\n`-terminated line per row; empty without rows.
    pub fn render(mut self) -> String {
        let last = self.grid.column_count().saturating_sub(1);
        let gap = self.gap;
        for (i, col) in self.grid.column_iter_mut().enumerate() {
            let right = if i == last { 0 } else { gap };
            col.set_padding((0, right));
        }
        for (i, width) in std::mem::take(&mut self.min) {
            if let Some(col) = self.grid.column_mut(i) {
                // comfy-table counts the padding into the boundary.
                col.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(width.saturating_add(gap))));
            }
        }
        if self.grid.row_count() == 0 && self.grid.header().is_none() {
            return String::new();
        }
        self.grid.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_like_format_padding() {
        let mut t = Table::new(1).header(["FROM", "TARGET", "NOTE"]).min_widths(&[0, 8]);
        t.row(["a", "x:1", "ok"]);
        t.row(["longer", "y", ""]);
        assert_eq!(
            t.render(),
            format!("{:<6} {:<8} NOTE\n{:<6} {:<8} ok\n{:<6} y\n", "FROM", "TARGET", "a", "x:1", "longer")
        );
    }

    #[test]
    fn the_gap_separates_columns_and_the_last_is_not_padded() {
        let mut t = Table::new(2).header(["NAME", "V"]);
        t.row(["db", "3"]);
        assert_eq!(t.render(), "NAME  V\ndb    3\n");
        assert_eq!(Table::new(1).render(), "");
    }
}
