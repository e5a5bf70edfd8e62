//! `.npy` and safetensors: round trips, files written byte by byte in the test (as another
//! program would write them: f64/i64/i32/u8/bool, Fortran order, big-endian, an I64
//! `num_batches_tracked`), and bad files giving errors that name the file.

use std::collections::HashMap;
use std::path::PathBuf;

use ssod::tensor::npy::{read_npy, write_npy};
use ssod::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use ssod::{ops, Tensor};

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssod-tensor-io-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `.npy` file: magic, version, header length, the dict padded with spaces to a multiple of 64
/// (version 1.0: u16 length; 2.0: u32 length), then the raw data.
fn npy_bytes(version: u8, descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
        if fortran { "True" } else { "False" }
    );
    let prefix = if version == 1 { 10 } else { 12 };
    while (prefix + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut b = b"\x93NUMPY".to_vec();
    b.extend([version, 0]);
    if version == 1 {
        b.extend((header.len() as u16).to_le_bytes());
    } else {
        b.extend((header.len() as u32).to_le_bytes());
    }
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

fn read_bytes(dir: &std::path::Path, name: &str, bytes: &[u8]) -> ssod::Result<Tensor> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    read_npy(&p)
}

#[test]
fn npy_f32_round_trip() {
    let d = scratch("npy-rt");
    let values: Vec<f32> = vec![
        0.0,
        -0.0,
        1.5,
        -3.25e-8,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e30,
        -7.0,
        0.1,
        2.0 / 3.0,
        5.0,
        6.0,
    ];
    for shape in [vec![12], vec![3, 4], vec![2, 3, 2], vec![1, 12, 1]] {
        let t = Tensor::from_vec(values.clone(), shape.clone()).unwrap();
        let p = d.join(format!("{shape:?}.npy"));
        write_npy(&p, &t).unwrap();
        let back = read_npy(&p).unwrap();
        assert_eq!(back.dims(), &shape[..]);
        assert_eq!(
            back.to_vec()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "values of {shape:?}"
        );
    }
    // Zero-dimensional.
    let p = d.join("scalar.npy");
    write_npy(&p, &Tensor::scalar(4.5)).unwrap();
    let back = read_npy(&p).unwrap();
    assert_eq!((back.rank(), back.item().unwrap()), (0, 4.5));
    // A non-contiguous view is written in logical order.
    let m = Tensor::from_vec(values[..6].to_vec(), [2, 3]).unwrap();
    let p = d.join("transposed.npy");
    write_npy(&p, &ops::transpose(&m, 0, 1).unwrap()).unwrap();
    let back = read_npy(&p).unwrap();
    assert_eq!(back.dims(), [3, 2]);
    assert_eq!(
        back.to_vec(),
        vec![values[0], values[3], values[1], values[4], values[2], values[5]]
    );
    // The file itself is a valid v1.0 npy: header length makes the data start 64-aligned.
    let bytes = std::fs::read(&p).unwrap();
    let hl = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!(
        (&bytes[..8], (10 + hl) % 64, bytes.len() - 10 - hl),
        (&b"\x93NUMPY\x01\x00"[..], 0, 24)
    );
}

#[test]
fn npy_other_dtypes_from_known_bytes() {
    let d = scratch("npy-dtypes");
    let f64s: Vec<u8> = [1.5f64, -2.25, 1e-3]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let t = read_bytes(&d, "f8.npy", &npy_bytes(1, "<f8", false, "(3,)", &f64s)).unwrap();
    assert_eq!(
        (t.dims(), t.to_vec()),
        (&[3usize][..], vec![1.5, -2.25, 1e-3f64 as f32])
    );

    let i64s: Vec<u8> = [7i64, -3, 1 << 40, 0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let t = read_bytes(&d, "i8.npy", &npy_bytes(1, "<i8", false, "(2, 2)", &i64s)).unwrap();
    assert_eq!(
        (t.dims(), t.to_vec()),
        (&[2usize, 2][..], vec![7.0, -3.0, (1u64 << 40) as f32, 0.0])
    );

    let i32s: Vec<u8> = [-1i32, 2, 65536]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let t = read_bytes(&d, "i4.npy", &npy_bytes(1, "<i4", false, "(3,)", &i32s)).unwrap();
    assert_eq!(t.to_vec(), vec![-1.0, 2.0, 65536.0]);

    let t = read_bytes(
        &d,
        "u1.npy",
        &npy_bytes(1, "|u1", false, "(4,)", &[0, 1, 128, 255]),
    )
    .unwrap();
    assert_eq!(t.to_vec(), vec![0.0, 1.0, 128.0, 255.0]);

    let t = read_bytes(
        &d,
        "b1.npy",
        &npy_bytes(1, "|b1", false, "(2, 2)", &[1, 0, 0, 1]),
    )
    .unwrap();
    assert_eq!(
        (t.dims(), t.to_vec()),
        (&[2usize, 2][..], vec![1.0, 0.0, 0.0, 1.0])
    );

    // Fortran order: logical [[1,2,3],[4,5,6]] is stored column by column: 1,4,2,5,3,6.
    let col: Vec<u8> = [1f32, 4., 2., 5., 3., 6.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let t = read_bytes(
        &d,
        "fortran.npy",
        &npy_bytes(1, "<f4", true, "(2, 3)", &col),
    )
    .unwrap();
    assert_eq!(
        (t.dims(), t.to_vec()),
        (&[2usize, 3][..], vec![1., 2., 3., 4., 5., 6.])
    );
    // Fortran order in 3-D: element (i,j,k) of shape (2,2,2) sits at i + 2j + 4k; value = 100i+10j+k.
    let mut f3 = [0f32; 8];
    for (i, j, k) in (0..8).map(|p| (p / 4, (p / 2) % 2, p % 2)) {
        f3[i + 2 * j + 4 * k] = (100 * i + 10 * j + k) as f32;
    }
    let b: Vec<u8> = f3.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_bytes(
        &d,
        "fortran3.npy",
        &npy_bytes(1, "<f4", true, "(2, 2, 2)", &b),
    )
    .unwrap();
    assert_eq!(t.to_vec(), vec![0., 1., 10., 11., 100., 101., 110., 111.]);

    // Big-endian f4 and i8.
    let be: Vec<u8> = [1.0f32, -0.5, 3.0e5]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    let t = read_bytes(&d, "be-f4.npy", &npy_bytes(1, ">f4", false, "(3,)", &be)).unwrap();
    assert_eq!(t.to_vec(), vec![1.0, -0.5, 3.0e5]);
    let be: Vec<u8> = [-2i64, 300].iter().flat_map(|v| v.to_be_bytes()).collect();
    let t = read_bytes(&d, "be-i8.npy", &npy_bytes(1, ">i8", false, "(2,)", &be)).unwrap();
    assert_eq!(t.to_vec(), vec![-2.0, 300.0]);

    // Format version 2.0 (u32 header length).
    let b: Vec<u8> = [9f32, 8.].iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = read_bytes(&d, "v2.npy", &npy_bytes(2, "<f4", false, "(1, 2)", &b)).unwrap();
    assert_eq!((t.dims(), t.to_vec()), (&[1usize, 2][..], vec![9.0, 8.0]));
}

#[test]
fn npy_bad_files_name_the_file() {
    let d = scratch("npy-bad");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "complex.npy",
            npy_bytes(1, "<c8", false, "(2,)", &[0; 16]),
            "c8",
        ),
        (
            "short.npy",
            npy_bytes(1, "<f4", false, "(4,)", &[0; 8]),
            "bytes",
        ),
        ("magic.npy", b"PK\x03\x04 not an npy file".to_vec(), "magic"),
        // 2^32 · 2^32 wraps to 0 in an unchecked product and would pass the length check.
        (
            "wrapping.npy",
            npy_bytes(1, "<f4", false, "(4294967296, 4294967296)", &[0; 8]),
            "can address",
        ),
        (
            "header.npy",
            npy_bytes(1, "<f4", false, "(2,)", &[0; 8])[..20].to_vec(),
            "truncated",
        ),
    ];
    for (name, bytes, what) in cases {
        let e = read_bytes(&d, name, &bytes).unwrap_err().to_string();
        assert!(
            e.contains(name) && e.contains(what),
            "{name}: error should name the file and say `{what}`: {e}"
        );
    }
    let missing = d.join("missing.npy");
    let e = read_npy(&missing).unwrap_err().to_string();
    assert!(e.contains("missing.npy"), "{e}");
}

#[test]
fn safetensors_round_trips() {
    let d = scratch("st-rt");
    let a = Tensor::from_vec(vec![1.0, -2.5, 0.3, 1e-3, 65504.0, -1e-5], [2, 3]).unwrap();
    let b = Tensor::from_vec((0..10).map(|i| (i as f32 - 4.5) * 0.37).collect(), [10]).unwrap();
    let sc = Tensor::scalar(42.0);
    // A non-contiguous view is saved in logical order.
    let p = d.join("view.safetensors");
    write_safetensors(
        &p,
        [("t", &ops::transpose(&a, 0, 1).unwrap())],
        SaveDtype::F32,
        None,
    )
    .unwrap();
    let back = &read_safetensors(&p).unwrap().tensors["t"];
    assert_eq!(
        (back.dims(), back.to_vec()),
        (&[3usize, 2][..], vec![1.0, 1e-3, -2.5, 65504.0, 0.3, -1e-5])
    );
    let meta: HashMap<String, String> = [
        ("format".to_string(), "pt".to_string()),
        ("epoch".into(), "3".into()),
    ]
    .into();
    for (dtype, rel) in [
        (SaveDtype::F32, 0.0),
        (SaveDtype::F16, 1.0 / 2048.0),
        (SaveDtype::BF16, 1.0 / 256.0),
    ] {
        let p = d.join(format!("{dtype:?}.safetensors"));
        write_safetensors(
            &p,
            [("layer.a", &a), ("b", &b), ("s", &sc)],
            dtype,
            Some(meta.clone()),
        )
        .unwrap();
        let f = read_safetensors(&p).unwrap();
        assert_eq!(
            f.tensors.keys().collect::<Vec<_>>(),
            vec!["b", "layer.a", "s"]
        );
        assert_eq!(f.metadata, meta);
        let want_dt = match dtype {
            SaveDtype::F32 => safetensors::Dtype::F32,
            SaveDtype::F16 => safetensors::Dtype::F16,
            SaveDtype::BF16 => safetensors::Dtype::BF16,
        };
        assert!(
            f.dtypes.values().all(|&t| t == want_dt),
            "{dtype:?}: dtypes {:?}",
            f.dtypes
        );
        for (name, orig) in [("layer.a", &a), ("b", &b), ("s", &sc)] {
            let back = &f.tensors[name];
            assert_eq!(back.dims(), orig.dims(), "{dtype:?} {name} shape");
            for (i, (x, y)) in back.to_vec().iter().zip(orig.to_vec()).enumerate() {
                // Half precision: round to nearest keeps the relative error within half an ulp
                // (2^-11 for f16, 2^-8 for bf16); the tiny 1e-5 is subnormal in f16 (spacing 6e-8).
                let tol = rel * y.abs() as f64 + if dtype == SaveDtype::F16 { 6e-8 } else { 0.0 };
                assert!(
                    ((x - y).abs() as f64) <= tol,
                    "{dtype:?} {name}[{i}]: {x} vs {y}"
                );
            }
        }
    }
}

/// A safetensors file built by hand: u64 LE header length, JSON header, little-endian data.
#[test]
fn safetensors_from_known_bytes() {
    let d = scratch("st-bytes");
    let mut data = vec![];
    data.extend(5i64.to_le_bytes()); // bn.num_batches_tracked: I64 scalar 5, bytes 0..8
    [1.0f32, -2.0, 0.5, 4.0]
        .iter()
        .for_each(|v| data.extend(v.to_le_bytes())); // conv.weight F32 [2,2], 8..24
    [1.5f32, -0.25]
        .iter()
        .for_each(|v| data.extend(half::f16::from_f32(*v).to_le_bytes())); // h F16 [2], 24..28
    [3.0f32, 0.125]
        .iter()
        .for_each(|v| data.extend(half::bf16::from_f32(*v).to_le_bytes())); // bf BF16 [2], 28..32
    [-7i32, 9].iter().for_each(|v| data.extend(v.to_le_bytes())); // i I32 [2], 32..40
    data.extend([200u8, 0, 1]); // u U8 [3], 40..43
    data.extend([1u8, 0]); // flags BOOL [2], 43..45
    data.extend((-0.75f64).to_le_bytes()); // d F64 [1], 45..53
    let header = r#"{"__metadata__":{"format":"pt"},"bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"conv.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]},"h":{"dtype":"F16","shape":[2],"data_offsets":[24,28]},"bf":{"dtype":"BF16","shape":[2],"data_offsets":[28,32]},"i":{"dtype":"I32","shape":[2],"data_offsets":[32,40]},"u":{"dtype":"U8","shape":[3],"data_offsets":[40,43]},"flags":{"dtype":"BOOL","shape":[2],"data_offsets":[43,45]},"d":{"dtype":"F64","shape":[1],"data_offsets":[45,53]}}"#;
    let mut header = header.to_string();
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(&data);
    let p = d.join("hand.safetensors");
    std::fs::write(&p, &bytes).unwrap();
    let f = read_safetensors(&p).unwrap();
    let nbt = &f.tensors["bn.num_batches_tracked"];
    assert_eq!((nbt.rank(), nbt.item().unwrap()), (0, 5.0));
    assert_eq!(f.dtypes["bn.num_batches_tracked"], safetensors::Dtype::I64);
    assert_eq!(f.tensors["conv.weight"].dims(), [2, 2]);
    assert_eq!(f.tensors["conv.weight"].to_vec(), vec![1.0, -2.0, 0.5, 4.0]);
    // 1.5, −0.25, 3 and 0.125 are exact in f16 and bf16.
    assert_eq!(f.tensors["h"].to_vec(), vec![1.5, -0.25]);
    assert_eq!(f.tensors["bf"].to_vec(), vec![3.0, 0.125]);
    assert_eq!(f.tensors["i"].to_vec(), vec![-7.0, 9.0]);
    assert_eq!(f.tensors["u"].to_vec(), vec![200.0, 0.0, 1.0]);
    assert_eq!(f.tensors["flags"].to_vec(), vec![1.0, 0.0]);
    assert_eq!(f.tensors["d"].to_vec(), vec![-0.75]);
    assert_eq!(f.metadata.get("format").map(String::as_str), Some("pt"));
}

#[test]
fn safetensors_bad_files_name_the_file() {
    let d = scratch("st-bad");
    let good = d.join("good.safetensors");
    write_safetensors(&good, [("w", &Tensor::ones([4, 4]))], SaveDtype::F32, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut huge_header = bytes.clone();
    huge_header[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated.safetensors", bytes[..bytes.len() - 10].to_vec()),
        (
            "garbage.safetensors",
            b"this is not a safetensors file at all".to_vec(),
        ),
        ("tiny.safetensors", vec![1, 2, 3]),
        ("huge-header.safetensors", huge_header),
    ];
    for (name, b) in cases {
        let p = d.join(name);
        std::fs::write(&p, b).unwrap();
        let e = read_safetensors(&p)
            .err()
            .unwrap_or_else(|| panic!("{name}: a corrupt file was read"))
            .to_string();
        assert!(
            e.contains(name),
            "{name}: error does not name the file: {e}"
        );
    }
    let e = read_safetensors(&d.join("missing.safetensors"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("missing.safetensors"), "{e}");
}
