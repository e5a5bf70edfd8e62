//! The ONNX graph of a YOLOX model, node by node: each layer of the engine (conv with its BN
//! folded in, SiLU, CSP, SPP, Focus, upsampling, the decoupled head, the decode) as standard
//! opset-13 nodes and initializers, under names that follow the model's parameter names.

use std::collections::HashMap;

use super::onnx_proto::{
    attribute_type, tensor_shape_proto, type_proto, AttributeProto, NodeProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, FLOAT, INT64,
};
use crate::models::yolox::{CspDarknet, HeadLevel, Pafpn};
use crate::models::YoloX;
use crate::nn::{BaseConv, BatchNorm2d, Bottleneck, Conv, Conv2d, CspLayer, Focus, SppBottleneck};
use crate::ops::BatchNormParams;
use crate::{Error, Result};

pub(super) fn value_info(name: &str, dims: &[usize]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            denotation: String::new(),
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            denotation: String::new(),
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d as i64)),
                        })
                        .collect(),
                }),
            })),
        }),
        doc_string: String::new(),
    }
}

pub(super) fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

pub(super) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

pub(super) fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// `w·γ/√(var+eps)` and `β + (b − mean)·γ/√(var+eps)` in f64, rounded once to f32: a conv (bias
/// `b`, or none) followed by an eval-mode BN as one conv.
pub(super) fn fold_bn(conv: &Conv2d, bn: &BatchNorm2d) -> (Vec<f32>, Vec<f32>) {
    let eps = BatchNormParams::default().eps as f64;
    let w = conv.weight.to_vec();
    let cout = conv.weight.dims()[0];
    let per = w.len() / cout;
    let (gamma, beta) = (bn.weight.to_vec(), bn.bias.to_vec());
    let (mean, var) = (bn.running_mean.to_vec(), bn.running_var.to_vec());
    let bias = conv
        .bias
        .as_ref()
        .map_or_else(|| vec![0.0; cout], |b| b.to_vec());
    let mut wf = Vec::with_capacity(w.len());
    let mut bf = Vec::with_capacity(cout);
    for o in 0..cout {
        let scale = gamma[o] as f64 / (var[o] as f64 + eps).sqrt();
        wf.extend(
            w[o * per..(o + 1) * per]
                .iter()
                .map(|&v| (v as f64 * scale) as f32),
        );
        bf.push((beta[o] as f64 + (bias[o] as f64 - mean[o] as f64) * scale) as f32);
    }
    (wf, bf)
}

/// Builds the node list and initializers; values are named `<module>/<op>`, which is unique
/// because module names are.
#[derive(Default)]
pub(super) struct GraphBuilder {
    pub(super) nodes: Vec<NodeProto>,
    pub(super) initializers: Vec<TensorProto>,
    /// Shared int64 constants by value (Slice bounds, shapes, scales' sizes).
    pub(super) int_consts: HashMap<Vec<i64>, String>,
}

impl GraphBuilder {
    /// One node named after its single output.
    pub(super) fn node(
        &mut self,
        op: &str,
        out: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.to_string()],
            name: out.to_string(),
            op_type: op.into(),
            domain: String::new(),
            attribute,
            doc_string: String::new(),
        });
    }

    pub(super) fn init_f32(
        &mut self,
        name: &str,
        dims: &[usize],
        values: &[f32],
    ) -> Result<String> {
        if dims.iter().product::<usize>() != values.len() {
            return Err(Error::shape("onnx export", dims, values.len()));
        }
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        Ok(name.to_string())
    }

    /// A 1-D int64 constant, shared by value.
    pub(super) fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.int_consts.get(values) {
            return name.clone();
        }
        let name = format!("const/int64_{}", self.int_consts.len());
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        self.int_consts.insert(values.to_vec(), name.clone());
        name
    }

    /// `Conv` with the given weights and bias (`weight` shaped like `like`'s).
    pub(super) fn conv_node(
        &mut self,
        x: &str,
        like: &Conv2d,
        prefix: &str,
        weight: &[f32],
        bias: &[f32],
    ) -> Result<String> {
        let d = like.weight.dims().to_vec();
        let p = like.params;
        let w = self.init_f32(&format!("{prefix}.weight"), &d, weight)?;
        let b = self.init_f32(&format!("{prefix}.bias"), &[d[0]], bias)?;
        let out = format!("{prefix}/conv");
        let (k, s, pad) = (d[2] as i64, p.stride as i64, p.padding as i64);
        self.node(
            "Conv",
            &out,
            &[x, &w, &b],
            vec![
                attr_ints("kernel_shape", &[k, d[3] as i64]),
                attr_ints("strides", &[s, s]),
                attr_ints("pads", &[pad, pad, pad, pad]),
                attr_ints("dilations", &[1, 1]),
                attr_int("group", p.groups as i64),
            ],
        );
        Ok(out)
    }

    /// BaseConv at `prefix`: folded Conv → Sigmoid → Mul; the output is named `prefix`.
    pub(super) fn base_conv(&mut self, x: &str, c: &BaseConv, prefix: &str) -> Result<String> {
        let (w, b) = fold_bn(&c.conv, &c.bn);
        let y = self.conv_node(x, &c.conv, &format!("{prefix}.conv"), &w, &b)?;
        let sig = format!("{prefix}/sigmoid");
        self.node("Sigmoid", &sig, &[&y], vec![]);
        self.node("Mul", prefix, &[&y, &sig], vec![]);
        Ok(prefix.to_string())
    }

    /// A plain conv with its own bias (the head's predictions).
    pub(super) fn conv2d(&mut self, x: &str, c: &Conv2d, prefix: &str) -> Result<String> {
        let w = c.weight.to_vec();
        let b = c
            .bias
            .as_ref()
            .map_or_else(|| vec![0.0; c.weight.dims()[0]], |b| b.to_vec());
        self.conv_node(x, c, prefix, &w, &b)
    }

    pub(super) fn conv(&mut self, x: &str, c: &Conv, prefix: &str) -> Result<String> {
        match c {
            Conv::Base(b) => self.base_conv(x, b, prefix),
            Conv::Dw(d) => {
                let y = self.base_conv(x, &d.dconv, &format!("{prefix}.dconv"))?;
                self.base_conv(&y, &d.pconv, &format!("{prefix}.pconv"))
            }
        }
    }

    pub(super) fn bottleneck(&mut self, x: &str, b: &Bottleneck, prefix: &str) -> Result<String> {
        let y = self.base_conv(x, &b.conv1, &format!("{prefix}.conv1"))?;
        let y = self.conv(&y, &b.conv2, &format!("{prefix}.conv2"))?;
        if !b.use_add {
            return Ok(y);
        }
        let out = format!("{prefix}/add");
        self.node("Add", &out, &[&y, x], vec![]);
        Ok(out)
    }

    pub(super) fn concat(&mut self, out: &str, parts: &[&str], axis: i64) -> String {
        self.node("Concat", out, parts, vec![attr_int("axis", axis)]);
        out.to_string()
    }

    pub(super) fn csp(&mut self, x: &str, l: &CspLayer, prefix: &str) -> Result<String> {
        let mut main = self.base_conv(x, &l.conv1, &format!("{prefix}.conv1"))?;
        for (i, b) in l.m.iter().enumerate() {
            main = self.bottleneck(&main, b, &format!("{prefix}.m.{i}"))?;
        }
        let bypass = self.base_conv(x, &l.conv2, &format!("{prefix}.conv2"))?;
        let cat = self.concat(&format!("{prefix}/cat"), &[&main, &bypass], 1);
        self.base_conv(&cat, &l.conv3, &format!("{prefix}.conv3"))
    }

    pub(super) fn spp(&mut self, x: &str, s: &SppBottleneck, prefix: &str) -> Result<String> {
        let x = self.base_conv(x, &s.conv1, &format!("{prefix}.conv1"))?;
        let mut parts = vec![x.clone()];
        for &k in &s.kernels {
            let out = format!("{prefix}/maxpool{k}");
            let (k, p) = (k as i64, (k / 2) as i64);
            self.node(
                "MaxPool",
                &out,
                &[&x],
                vec![
                    attr_ints("kernel_shape", &[k, k]),
                    attr_ints("strides", &[1, 1]),
                    attr_ints("pads", &[p, p, p, p]),
                ],
            );
            parts.push(out);
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cat = self.concat(&format!("{prefix}/cat"), &refs, 1);
        self.base_conv(&cat, &s.conv2, &format!("{prefix}.conv2"))
    }

    /// Focus: rows and columns from 0 or 1 in steps of 2, concatenated top-left, bottom-left,
    /// top-right, bottom-right (YOLOX's order), then its BaseConv.
    pub(super) fn focus(
        &mut self,
        x: &str,
        f: &Focus,
        prefix: &str,
        h: usize,
        w: usize,
    ) -> Result<String> {
        let ends = self.ints(&[h as i64, w as i64]);
        let axes = self.ints(&[2, 3]);
        let steps = self.ints(&[2, 2]);
        let mut parts = Vec::new();
        for (tag, row0, col0) in [("tl", 0, 0), ("bl", 1, 0), ("tr", 0, 1), ("br", 1, 1)] {
            let starts = self.ints(&[row0, col0]);
            let out = format!("{prefix}/slice_{tag}");
            self.node("Slice", &out, &[x, &starts, &ends, &axes, &steps], vec![]);
            parts.push(out);
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let cat = self.concat(&format!("{prefix}/cat"), &refs, 1);
        self.base_conv(&cat, &f.conv, &format!("{prefix}.conv"))
    }

    pub(super) fn darknet(
        &mut self,
        x: &str,
        d: &CspDarknet,
        prefix: &str,
        h: usize,
        w: usize,
    ) -> Result<[String; 3]> {
        let x = self.focus(x, &d.stem, &format!("{prefix}.stem"), h, w)?;
        let x = self.conv(&x, &d.dark2.0, &format!("{prefix}.dark2.0"))?;
        let x = self.csp(&x, &d.dark2.1, &format!("{prefix}.dark2.1"))?;
        let x = self.conv(&x, &d.dark3.0, &format!("{prefix}.dark3.0"))?;
        let c3 = self.csp(&x, &d.dark3.1, &format!("{prefix}.dark3.1"))?;
        let x = self.conv(&c3, &d.dark4.0, &format!("{prefix}.dark4.0"))?;
        let c4 = self.csp(&x, &d.dark4.1, &format!("{prefix}.dark4.1"))?;
        let x = self.conv(&c4, &d.dark5.0, &format!("{prefix}.dark5.0"))?;
        let x = self.spp(&x, &d.dark5.1, &format!("{prefix}.dark5.1"))?;
        let c5 = self.csp(&x, &d.dark5.2, &format!("{prefix}.dark5.2"))?;
        Ok([c3, c4, c5])
    }

    /// Nearest-neighbour 2× upsampling (`nn.Upsample(scale_factor=2, mode="nearest")`).
    pub(super) fn upsample2x(&mut self, x: &str, out: &str) -> Result<String> {
        let scales = self.init_f32(&format!("{out}.scales"), &[4], &[1.0, 1.0, 2.0, 2.0])?;
        self.node(
            "Resize",
            out,
            &[x, "", &scales],
            vec![
                attr_string("mode", "nearest"),
                attr_string("coordinate_transformation_mode", "asymmetric"),
                attr_string("nearest_mode", "floor"),
            ],
        );
        Ok(out.to_string())
    }

    /// YOLOPAFPN as [`Pafpn::forward`]: (P3, P4, P5).
    pub(super) fn pafpn(
        &mut self,
        x: &str,
        p: &Pafpn,
        prefix: &str,
        h: usize,
        w: usize,
    ) -> Result<[String; 3]> {
        let [x2, x1, x0] = self.darknet(x, &p.backbone, &format!("{prefix}.backbone"), h, w)?;
        let fpn_out0 = self.base_conv(&x0, &p.lateral_conv0, &format!("{prefix}.lateral_conv0"))?;
        let up0 = self.upsample2x(&fpn_out0, &format!("{prefix}/upsample0"))?;
        let cat = self.concat(&format!("{prefix}/cat_p4"), &[&up0, &x1], 1);
        let f_out0 = self.csp(&cat, &p.c3_p4, &format!("{prefix}.C3_p4"))?;
        let fpn_out1 =
            self.base_conv(&f_out0, &p.reduce_conv1, &format!("{prefix}.reduce_conv1"))?;
        let up1 = self.upsample2x(&fpn_out1, &format!("{prefix}/upsample1"))?;
        let cat = self.concat(&format!("{prefix}/cat_p3"), &[&up1, &x2], 1);
        let pan_out2 = self.csp(&cat, &p.c3_p3, &format!("{prefix}.C3_p3"))?;
        let down = self.conv(&pan_out2, &p.bu_conv2, &format!("{prefix}.bu_conv2"))?;
        let cat = self.concat(&format!("{prefix}/cat_n3"), &[&down, &fpn_out1], 1);
        let pan_out1 = self.csp(&cat, &p.c3_n3, &format!("{prefix}.C3_n3"))?;
        let down = self.conv(&pan_out1, &p.bu_conv1, &format!("{prefix}.bu_conv1"))?;
        let cat = self.concat(&format!("{prefix}/cat_n4"), &[&down, &fpn_out0], 1);
        let pan_out0 = self.csp(&cat, &p.c3_n4, &format!("{prefix}.C3_n4"))?;
        Ok([pan_out2, pan_out1, pan_out0])
    }

    /// The decoupled head as [`crate::models::YoloXHead::forward`]: per level
    /// `Concat[reg, obj, cls]` → `[1, 5 + C, h·w]`, the levels concatenated, transposed to
    /// `[1, A, 5 + C]` and named `out`.
    pub(super) fn head(
        &mut self,
        feats: &[String; 3],
        levels: &[HeadLevel],
        classes: usize,
        h: usize,
        w: usize,
        out: &str,
    ) -> Result<String> {
        if levels.len() != 3 {
            return Err(Error::InvalidArgument(format!(
                "onnx export: the head has {} levels, YOLOX has 3",
                levels.len()
            )));
        }
        let mut flat = Vec::new();
        for (i, ((lvl, x), s)) in levels.iter().zip(feats).zip([8, 16, 32]).enumerate() {
            let x = self.base_conv(x, &lvl.stem, &format!("head.stems.{i}"))?;
            let cls = self.conv(&x, &lvl.cls_convs[0], &format!("head.cls_convs.{i}.0"))?;
            let cls = self.conv(&cls, &lvl.cls_convs[1], &format!("head.cls_convs.{i}.1"))?;
            let reg = self.conv(&x, &lvl.reg_convs[0], &format!("head.reg_convs.{i}.0"))?;
            let reg = self.conv(&reg, &lvl.reg_convs[1], &format!("head.reg_convs.{i}.1"))?;
            let cls = self.conv2d(&cls, &lvl.cls_pred, &format!("head.cls_preds.{i}"))?;
            let reg_out = self.conv2d(&reg, &lvl.reg_pred, &format!("head.reg_preds.{i}"))?;
            let obj = self.conv2d(&reg, &lvl.obj_pred, &format!("head.obj_preds.{i}"))?;
            let cat = self.concat(&format!("head/level{i}/cat"), &[&reg_out, &obj, &cls], 1);
            let shape = self.ints(&[0, 5 + classes as i64, ((h / s) * (w / s)) as i64]);
            let f = format!("head/level{i}/flatten");
            self.node("Reshape", &f, &[&cat, &shape], vec![]);
            flat.push(f);
        }
        let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
        let all = self.concat("head/cat", &refs, 2);
        self.node(
            "Transpose",
            out,
            &[&all],
            vec![attr_ints("perm", &[0, 2, 1])],
        );
        Ok(out.to_string())
    }

    /// `[1, A, 5 + C]` raw → decoded (YOLOX `decode_outputs` after the head's eval-mode
    /// sigmoids), named `out`.
    pub(super) fn decode(
        &mut self,
        raw: &str,
        classes: usize,
        h: usize,
        w: usize,
        out: &str,
    ) -> Result<()> {
        let grid = YoloX::anchor_grid(h, w);
        let a = grid.len();
        let offsets: Vec<f32> = grid.iter().flat_map(|&(gx, gy, _)| [gx, gy]).collect();
        let strides: Vec<f32> = grid.iter().map(|g| g.2).collect();
        let offsets = self.init_f32("decode.grid", &[1, a, 2], &offsets)?;
        let strides = self.init_f32("decode.strides", &[1, a, 1], &strides)?;
        let axes = self.ints(&[2]);
        let slice = |g: &mut Self, name: &str, from: i64, to: i64| {
            let (s, e) = (g.ints(&[from]), g.ints(&[to]));
            let o = format!("decode/{name}");
            g.node("Slice", &o, &[raw, &s, &e, &axes], vec![]);
            o
        };
        let txy = slice(self, "txy", 0, 2);
        let twh = slice(self, "twh", 2, 4);
        let logits = slice(self, "logits", 4, 5 + classes as i64);
        self.node("Add", "decode/cell", &[&txy, &offsets], vec![]);
        self.node("Mul", "decode/cxcy", &["decode/cell", &strides], vec![]);
        self.node("Exp", "decode/exp", &[&twh], vec![]);
        self.node("Mul", "decode/wh", &["decode/exp", &strides], vec![]);
        self.node("Sigmoid", "decode/probs", &[&logits], vec![]);
        self.concat(out, &["decode/cxcy", "decode/wh", "decode/probs"], 2);
        Ok(())
    }
}
