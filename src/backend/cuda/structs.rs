//! The Rust mirrors of the CUDA structs kernels take by value, and their layouts.
//!
//! A kernel reads a struct argument as the bytes of its own CUDA struct, so each `#[repr(C)]`
//! mirror is declared with [`cuda_struct!`], which writes down the CUDA struct's size, alignment
//! and field offsets (as the CUDA compiler lays it out: natural alignment, `long long` and
//! pointers 8 bytes, `int` and `float` 4) and checks them twice: against the Rust struct at
//! compile time (`size_of`, `align_of`, `offset_of`), and against the CUDA struct by
//! `tests/cuda_kernels_compile.rs`, which compiles each kernel file with NVRTC followed by
//! `static_assert`s of the same numbers ([`struct_layouts`], [`layout_asserts`]).

use super::modules::KernelFile;

/// Size, alignment and field offsets (bytes) of a CUDA struct that a Rust mirror copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CudaStructLayout {
    /// The kernel file that defines the struct (directly or through a header it includes).
    pub file: KernelFile,
    /// The struct's CUDA name.
    pub name: &'static str,
    pub size: usize,
    pub align: usize,
    /// `(field, offset)`, every field in order, named as in both languages.
    pub fields: &'static [(&'static str, usize)],
}

/// Declare `$ty` (a `#[repr(C)]` struct with the fields, field names and order of the CUDA
/// struct `$cuda` of `$file`) a kernel argument: assert its size, alignment and field offsets at
/// compile time, publish them as `$ty::LAYOUT` for the NVRTC check, and implement cudarc's
/// `DeviceRepr` for it.
macro_rules! cuda_struct {
    ($ty:ident mirrors $cuda:literal in $file:expr, size $size:literal, align $align:literal,
     { $($field:ident @ $offset:literal),+ $(,)? }) => {
        const _: () = {
            assert!(std::mem::size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            assert!(std::mem::align_of::<$ty>() == $align, concat!("align of ", stringify!($ty)));
            $(assert!(
                std::mem::offset_of!($ty, $field) == $offset,
                concat!("offset of ", stringify!($ty), ".", stringify!($field))
            );)+
        };
        impl $ty {
            /// The CUDA struct's layout, as asserted above.
            pub(crate) const LAYOUT: $crate::backend::cuda::structs::CudaStructLayout =
                $crate::backend::cuda::structs::CudaStructLayout {
                    file: $file,
                    name: $cuda,
                    size: $size,
                    align: $align,
                    fields: &[$((stringify!($field), $offset)),+],
                };
        }
        // SAFETY: `$ty` is `repr(C)` plain data (integers, floats, device addresses as u64,
        // no references or padding-dependent invariants); its size, alignment and field offsets
        // are asserted above to be the CUDA struct's, which tests/cuda_kernels_compile.rs
        // asserts on the CUDA side, so the kernel reads exactly the bytes of each field.
        unsafe impl cudarc::driver::DeviceRepr for $ty {}
    };
}
pub(crate) use cuda_struct;

/// The layout of every CUDA struct a kernel takes by value.
pub fn struct_layouts() -> Vec<CudaStructLayout> {
    use super::{conv2d, elementwise, layout, optim, reduce};
    vec![
        conv2d::ConvGeom::LAYOUT,
        conv2d::implicit_gemm::MmaConvGeom::LAYOUT,
        elementwise::Bcast::LAYOUT,
        layout::Strided::LAYOUT,
        reduce::ReduceGeom::LAYOUT,
        optim::SgdRef::LAYOUT,
        optim::AdamRef::LAYOUT,
        optim::EmaRef::LAYOUT,
        optim::Chunk::LAYOUT,
    ]
}

/// CUDA `static_assert`s that the struct has `layout`'s size, alignment and offsets, to append
/// to the source of `layout.file` (NVRTC then refuses the file if any differs).
pub fn layout_asserts(layout: &CudaStructLayout) -> String {
    let name = layout.name;
    let mut out = format!(
        "static_assert(sizeof({name}) == {}, \"size of {name}\");\n\
         static_assert(alignof({name}) == {}, \"alignment of {name}\");\n",
        layout.size, layout.align
    );
    for (field, offset) in layout.fields {
        out.push_str(&format!(
            "static_assert(__builtin_offsetof({name}, {field}) == {offset}, \
             \"offset of {name}.{field}\");\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each layout lists fields in increasing offsets that fit the size, starts at 0, and its
    /// size is a multiple of its alignment (as both compilers lay structs out).
    #[test]
    fn layouts_are_consistent() {
        for l in struct_layouts() {
            assert_eq!(l.fields[0].1, 0, "{}", l.name);
            assert!(l.fields.windows(2).all(|w| w[0].1 < w[1].1), "{}", l.name);
            assert!(l.fields.last().unwrap().1 < l.size, "{}", l.name);
            assert_eq!(l.size % l.align, 0, "{}", l.name);
        }
    }

    #[test]
    fn asserts_name_every_field() {
        let l = CudaStructLayout {
            file: KernelFile::Optim,
            name: "Chunk",
            size: 16,
            align: 8,
            fields: &[("tensor", 0), ("start", 8)],
        };
        let text = layout_asserts(&l);
        assert!(text.contains("sizeof(Chunk) == 16"));
        assert!(text.contains("alignof(Chunk) == 8"));
        assert!(text.contains("__builtin_offsetof(Chunk, start) == 8"));
        assert_eq!(text.lines().count(), 4);
    }
}
