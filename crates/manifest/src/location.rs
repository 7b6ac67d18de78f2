//! Byte offsets (what the TOML parser reports) to line and column (what
//! people and editors use).

/// Line starts of a source text, for turning byte offsets into positions.
pub(crate) struct LineIndex<'s> {
    source: &'s str,
    /// Byte offset at which each line starts; the first is always 0.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    /// Indexes `source` once, so each lookup is a binary search.
    pub(crate) fn new(source: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self { source, starts }
    }

    /// The 1-based line and 1-based column (in characters) of byte `offset`;
    /// offsets past the end are clamped to it.
    pub(crate) fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self
            .starts
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(0);
        let column = match self.source.get(start..offset) {
            Some(text) => text.chars().count(),
            // Not on a character boundary: fall back to bytes.
            None => offset - start,
        };
        (line.max(1), column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_map_to_one_based_lines_and_columns() {
        let index = LineIndex::new("ab\ncd\n\nef");
        assert_eq!(index.locate(0), (1, 1));
        assert_eq!(index.locate(1), (1, 2));
        assert_eq!(index.locate(2), (1, 3)); // the newline itself
        assert_eq!(index.locate(3), (2, 1));
        assert_eq!(index.locate(6), (3, 1));
        assert_eq!(index.locate(8), (4, 2));
        assert_eq!(index.locate(100), (4, 3));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let index = LineIndex::new("é = 1\nx");
        assert_eq!(index.locate(2), (1, 2)); // after 'é' (two bytes)
        assert_eq!(index.locate(3), (1, 3));
        assert_eq!(index.locate(1), (1, 2)); // inside 'é': bytes
    }
}
