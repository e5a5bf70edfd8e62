//! Iterating the storage indices of a strided view in logical (row-major) order.

use super::Layout;

/// Yields storage indices of every element of a layout, last axis fastest.
pub(crate) struct StridedIter {
    dims: Vec<usize>,
    strides: Vec<usize>,
    index: Vec<usize>,
    next: Option<usize>,
    remaining: usize,
}

impl StridedIter {
    pub(crate) fn new(layout: &Layout) -> Self {
        Self::with(layout.shape.dims(), &layout.strides, layout.offset)
    }

    pub(crate) fn with(dims: &[usize], strides: &[usize], offset: usize) -> Self {
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

/// The values of a strided view in logical order: whole rows copied at once when the last axis
/// is contiguous (narrowed and permuted-outer views: cat's backward, the head's reshapes), element
/// by element along it otherwise (Focus's stride-2 slices).
pub(crate) fn gather_strided(data: &[f32], layout: &Layout) -> Vec<f32> {
    let dims = layout.shape.dims();
    let Some((&inner, outer_dims)) = dims.split_last() else {
        return vec![data[layout.offset]];
    };
    let (&step, outer_strides) = layout
        .strides
        .split_last()
        .expect("strides have the rank of the shape");
    let mut out = Vec::with_capacity(layout.shape.numel());
    if inner == 0 {
        return out;
    }
    for base in StridedIter::with(outer_dims, outer_strides, layout.offset) {
        if step == 1 {
            out.extend_from_slice(&data[base..base + inner]);
        } else {
            out.extend((0..inner).map(|j| data[base + j * step]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Shape;

    #[test]
    fn gather_strided_matches_the_element_walk() {
        let data: Vec<f32> = (0..400).map(|v| v as f32).collect();
        let layouts = [
            // narrow on the middle axis of [4, 10, 10]: rows of 6, offset 20
            Layout {
                shape: Shape(vec![4, 3, 6]),
                strides: vec![100, 10, 1],
                offset: 23,
            },
            // permuted: last axis strided
            Layout {
                shape: Shape(vec![5, 4, 2]),
                strides: vec![1, 20, 100],
                offset: 0,
            },
            // stride-2 slice of the last axis, and a broadcast (stride 0) outer axis
            Layout {
                shape: Shape(vec![3, 2, 5]),
                strides: vec![0, 40, 2],
                offset: 1,
            },
            Layout {
                shape: Shape(vec![]),
                strides: vec![],
                offset: 7,
            },
            Layout {
                shape: Shape(vec![2, 0]),
                strides: vec![10, 1],
                offset: 0,
            },
        ];
        for l in &layouts {
            let walk: Vec<f32> = StridedIter::new(l).map(|i| data[i]).collect();
            assert_eq!(gather_strided(&data, l), walk, "{l:?}");
        }
    }
}
