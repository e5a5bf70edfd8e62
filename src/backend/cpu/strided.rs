//! Walking the storage indices of a strided view in logical (row-major) order: reading views
//! (`tensor`), scattering into them and summing down to a kept shape.

/// Yields the storage index of every element of a strided view, last axis fastest.
pub struct StridedIter {
    dims: Vec<usize>,
    strides: Vec<usize>,
    index: Vec<usize>,
    next: Option<usize>,
    remaining: usize,
}

impl StridedIter {
    /// The indices of the view `dims` with `strides` starting at `offset`.
    pub fn with(dims: &[usize], strides: &[usize], offset: usize) -> Self {
        let remaining = dims.iter().product();
        StridedIter {
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            index: vec![0; dims.len()],
            next: if remaining > 0 { Some(offset) } else { None },
            remaining,
        }
    }
}

impl Iterator for StridedIter {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        self.remaining -= 1;
        if self.remaining == 0 {
            self.next = None;
            return Some(cur);
        }
        let mut pos = cur;
        for ax in (0..self.dims.len()).rev() {
            self.index[ax] += 1;
            pos += self.strides[ax];
            if self.index[ax] < self.dims[ax] {
                self.next = Some(pos);
                return Some(cur);
            }
            pos -= self.strides[ax] * self.dims[ax];
            self.index[ax] = 0;
        }
        self.next = None;
        Some(cur)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
