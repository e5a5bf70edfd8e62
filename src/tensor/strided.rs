//! Reading a strided view in logical (row-major) order.

pub(crate) use crate::backend::cpu::strided::StridedIter;

use super::Layout;

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
            let walk: Vec<f32> = StridedIter::with(l.shape.dims(), &l.strides, l.offset)
                .map(|i| data[i])
                .collect();
            assert_eq!(gather_strided(&data, l), walk, "{l:?}");
        }
    }
}
