//! The Rust mirrors of the CUDA structs kernels take by value, and their layouts.
//!
//! A kernel reads a struct argument as the bytes of its own CUDA struct, so each `#[repr(C)]`
//! mirror is declared with `cuda_struct!`, which writes down the CUDA struct's size, alignment
//! and field offsets (as the CUDA compiler lays it out: natural alignment, `long long` and
//! pointers 8 bytes, `int` and `float` 4) and checks them twice: against the Rust struct at
//! compile time (`size_of`, `align_of`, `offset_of`), and against the CUDA struct by
//! `tests/cuda_kernels_compile.rs`, which compiles each kernel file with NVRTC followed by
//! `static_assert`s of the size and alignment and a probe kernel whose PTX holds the offsets
//! ([`struct_layouts`], [`layout_check_source`], [`probed_layout`]).

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

/// CUDA source to append to the source of `layout.file`: `static_assert`s of the struct's size
/// and alignment (NVRTC refuses the file if either differs), and a probe kernel
/// ([`probe_kernel`]) that stores the size, the alignment and each field's offset, in that
/// order, into its argument: NVRTC folds them to constants, which [`probed_layout`] reads back
/// from the PTX (NVRTC has no `offsetof` in a constant expression).
pub fn layout_check_source(layout: &CudaStructLayout) -> String {
    let name = layout.name;
    let mut out = format!(
        "static_assert(sizeof({name}) == {}, \"size of {name}\");\n\
         static_assert(alignof({name}) == {}, \"alignment of {name}\");\n\
         extern \"C\" __global__ void {}(volatile unsigned long long* out) {{\n\
         \x20   out[0] = sizeof({name});\n\
         \x20   out[1] = alignof({name});\n",
        layout.size,
        layout.align,
        probe_kernel(layout)
    );
    for (i, (field, _)) in layout.fields.iter().enumerate() {
        out.push_str(&format!(
            "    out[{}] = (unsigned long long)&((({name}*)0)->{field});\n",
            i + 2
        ));
    }
    out.push_str("}\n");
    out
}

/// The name of the probe kernel of [`layout_check_source`].
pub fn probe_kernel(layout: &CudaStructLayout) -> String {
    format!("ssod_layout_probe_{}", layout.name)
}

/// The values the probe kernel `kernel` stores, by slot, read from its PTX: each
/// `st.volatile.global.u64 [%rdA+8k], v` with `v` a constant or a register last set by
/// `mov.u64 %rdB, constant`. `None` when the kernel is missing or a store is not of that form.
pub fn probed_layout(ptx: &str, kernel: &str) -> Option<Vec<u64>> {
    let body = ptx.split(&format!(".entry {kernel}(")).nth(1)?;
    let body = body.split("ret;").next()?;
    let mut registers = std::collections::HashMap::new();
    let mut slots: Vec<Option<u64>> = Vec::new();
    for line in body.lines().map(str::trim) {
        let line = line.trim_end_matches(';');
        if let Some(rest) = line.strip_prefix("mov.u64") {
            let (reg, value) = rest.split_once(',')?;
            if let Ok(v) = value.trim().parse::<u64>() {
                registers.insert(reg.trim().to_string(), v);
            }
        } else if let Some(rest) = line.strip_prefix("st.volatile.global.u64") {
            let (address, value) = rest.split_once(',')?;
            let address = address.trim().strip_prefix('[')?.strip_suffix(']')?;
            let offset = match address.split_once('+') {
                Some((_, off)) => off.parse::<usize>().ok()?,
                None => 0,
            };
            let value = value.trim();
            let v = match value.parse::<u64>() {
                Ok(v) => v,
                Err(_) => *registers.get(value)?,
            };
            if offset % 8 != 0 {
                return None;
            }
            let slot = offset / 8;
            if slots.len() <= slot {
                slots.resize(slot + 1, None);
            }
            slots[slot] = Some(v);
        }
    }
    slots.into_iter().collect()
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

    fn chunk() -> CudaStructLayout {
        CudaStructLayout {
            file: KernelFile::Optim,
            name: "Chunk",
            size: 16,
            align: 8,
            fields: &[("tensor", 0), ("start", 8)],
        }
    }

    #[test]
    fn the_check_source_asserts_and_probes_every_field() {
        let text = layout_check_source(&chunk());
        assert!(text.contains("static_assert(sizeof(Chunk) == 16"));
        assert!(text.contains("static_assert(alignof(Chunk) == 8"));
        assert!(text.contains("void ssod_layout_probe_Chunk(volatile unsigned long long* out)"));
        assert!(text.contains("out[2] = (unsigned long long)&(((Chunk*)0)->tensor);"));
        assert!(text.contains("out[3] = (unsigned long long)&(((Chunk*)0)->start);"));
    }

    /// PTX as NVRTC 13.0 writes the probe of a 4-slot struct: constants through registers (one
    /// register reused for two slots) and a store without an offset for slot 0.
    #[test]
    fn the_probe_values_are_read_back_from_ptx() {
        let ptx = "\
.visible .entry ssod_layout_probe_Chunk(
\t.param .u64 ssod_layout_probe_Chunk_param_0
)
{
\tld.param.u64 \t%rd1, [ssod_layout_probe_Chunk_param_0];
\tcvta.to.global.u64 \t%rd2, %rd1;
\tmov.u64 \t%rd3, 16;
\tst.volatile.global.u64 \t[%rd2], %rd3;
\tmov.u64 \t%rd4, 8;
\tst.volatile.global.u64 \t[%rd2+8], %rd4;
\tmov.u64 \t%rd5, 0;
\tst.volatile.global.u64 \t[%rd2+16], %rd5;
\tst.volatile.global.u64 \t[%rd2+24], %rd4;
\tret;
}
";
        assert_eq!(
            probed_layout(ptx, "ssod_layout_probe_Chunk"),
            Some(vec![16, 8, 0, 8])
        );
        assert_eq!(probed_layout(ptx, "ssod_layout_probe_Other"), None);
        // A slot never stored, or a store of an unknown register, is no reading.
        let gap = ptx.replace("[%rd2+16]", "[%rd2+40]");
        assert_eq!(probed_layout(&gap, "ssod_layout_probe_Chunk"), None);
        let unknown = ptx.replace("[%rd2+24], %rd4", "[%rd2+24], %rd9");
        assert_eq!(probed_layout(&unknown, "ssod_layout_probe_Chunk"), None);
    }
}
