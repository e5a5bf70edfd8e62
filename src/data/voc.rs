//! Pascal VOC annotations: one XML file per image, parsed into [`VocAnnotation`] with the raw XML
//! coordinates (floats allowed, 1-based inclusive corners as VOC writes them), and written back as
//! standard VOC XML. Dataset readers for the two folder layouts live in [`layout`]:
//! FloW (`training/{images,annotations}`, `test/{images,annotations}`) and classic VOC
//! (`JPEGImages`, `Annotations`, `ImageSets/Main/*.txt`).
//!
//! Conversion to the shared `CocoDataset` (the study's coco-tools rules) is in `data::convert`.

use std::fmt::Write as _;
use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{Error, Result};

pub mod layout;

pub use layout::{collect_labels, list_xml_files, read_flow_split, read_labels, read_voc_classic};

/// One VOC XML file: `<filename>`, `<size>` and every `<object>`.
#[derive(Debug, Clone, PartialEq)]
pub struct VocAnnotation {
    /// `<filename>` as written (the study's conversion ignores it and uses the xml's own name).
    pub filename: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<VocObject>,
}

/// One `<object>`: its `<name>`, `<bndbox>` corners exactly as in the XML (VOC: 1-based,
/// inclusive; may be fractional) and `<difficult>`.
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
    pub difficult: bool,
}

/// Fields of one `<object>` while it is being read (every field is optional until `</object>`).
#[derive(Default)]
struct PartialObject {
    name: Option<String>,
    xmin: Option<f64>,
    ymin: Option<f64>,
    xmax: Option<f64>,
    ymax: Option<f64>,
    difficult: bool,
}

impl VocAnnotation {
    /// Read and parse one VOC XML file. Errors name the file; parse errors carry the parser's
    /// message and the line and column.
    pub fn read(path: &Path) -> Result<Self> {
        let text = crate::data::dataset::read_text_file(path)?;
        Self::parse(&text).map_err(|msg| Error::format(path.display(), msg))
    }

    /// Parse VOC XML text. The error is a message without the file name (the caller adds it).
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut reader = Reader::from_str(text);
        let mut doc = VocBuilder::default();
        loop {
            let event = reader.read_event().map_err(|e| {
                let (line, col) = line_col(text, reader.error_position() as usize);
                format!("malformed XML at line {line}, column {col}: {e}")
            })?;
            match event {
                Event::Start(start) => {
                    let name = start.local_name().as_ref().to_string();
                    if doc.stack.is_empty() && doc.saw_root {
                        let (line, col) = line_col(text, reader.buffer_position() as usize);
                        return Err(format!(
                            "malformed XML at line {line}, column {col}: a second root element <{name}>"
                        ));
                    }
                    doc.open(name);
                }
                Event::Empty(start) => {
                    // `<object/>` or `<difficult/>`: an element with no content. An empty object
                    // is an object without a name and a box, reported as such.
                    let name = start.local_name().as_ref().to_string();
                    if doc.stack.len() == 1 && name == "object" {
                        return Err(format!(
                            "object[{}]: empty <object/> (no <name>, no <bndbox>)",
                            doc.objects.len()
                        ));
                    }
                }
                Event::Text(t) => doc.leaf_text.push_str(&t.xml10_content()),
                Event::CData(c) => doc.leaf_text.push_str(&c),
                Event::GeneralRef(r) => doc.leaf_text.push_str(&resolve_reference(&r)?),
                Event::End(_) => doc.close()?,
                Event::Eof => {
                    if let Some(open) = doc.stack.last() {
                        let (line, col) = line_col(text, text.len());
                        return Err(format!(
                            "malformed XML at line {line}, column {col}: end of file inside <{open}>"
                        ));
                    }
                    break;
                }
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        doc.finish(text)
    }

    /// Standard VOC XML text (`<annotation>` with folder, filename, size with depth 3, segmented 0
    /// and one `<object>` per box with pose, truncated, difficult and bndbox). Integral coordinates
    /// are written without a decimal point, as VOC tools write them.
    pub fn to_xml_string(&self) -> String {
        let esc = |s: &str| quick_xml::escape::escape(s).into_owned();
        let mut out = String::new();
        out.push_str("<annotation>\n");
        out.push_str("\t<folder>images</folder>\n");
        let _ = writeln!(out, "\t<filename>{}</filename>", esc(&self.filename));
        out.push_str("\t<size>\n");
        let _ = writeln!(out, "\t\t<width>{}</width>", self.width);
        let _ = writeln!(out, "\t\t<height>{}</height>", self.height);
        out.push_str("\t\t<depth>3</depth>\n");
        out.push_str("\t</size>\n");
        out.push_str("\t<segmented>0</segmented>\n");
        for obj in &self.objects {
            out.push_str("\t<object>\n");
            let _ = writeln!(out, "\t\t<name>{}</name>", esc(&obj.name));
            out.push_str("\t\t<pose>Unspecified</pose>\n");
            out.push_str("\t\t<truncated>0</truncated>\n");
            let _ = writeln!(
                out,
                "\t\t<difficult>{}</difficult>",
                u8::from(obj.difficult)
            );
            out.push_str("\t\t<bndbox>\n");
            for (tag, v) in [
                ("xmin", obj.xmin),
                ("ymin", obj.ymin),
                ("xmax", obj.xmax),
                ("ymax", obj.ymax),
            ] {
                let _ = writeln!(out, "\t\t\t<{tag}>{}</{tag}>", format_coord(v));
            }
            out.push_str("\t\t</bndbox>\n");
            out.push_str("\t</object>\n");
        }
        out.push_str("</annotation>\n");
        out
    }

    /// Write [`Self::to_xml_string`] to `path` (temporary file + rename).
    pub fn write_xml(&self, path: &Path) -> Result<()> {
        crate::atomic_file::write_atomic(path, self.to_xml_string().as_bytes())
    }
}
/// What [`VocAnnotation::parse`] has read so far: the open elements, the text of the innermost
/// one, and the fields and objects it closed.
#[derive(Default)]
struct VocBuilder {
    stack: Vec<String>,
    leaf_text: String,
    filename: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    objects: Vec<VocObject>,
    current: Option<PartialObject>,
    saw_root: bool,
}

impl VocBuilder {
    /// An element opens (an `<object>` directly under the root starts a new object).
    fn open(&mut self, name: String) {
        if self.stack.is_empty() {
            self.saw_root = true;
        }
        self.stack.push(name);
        self.leaf_text.clear();
        if is_path(&self.stack, &["object"]) {
            self.current = Some(PartialObject::default());
        }
    }

    /// The innermost element closes: its text goes to the field its path names.
    fn close(&mut self) -> std::result::Result<(), String> {
        let value = self.leaf_text.trim().to_string();
        let obj_index = self.objects.len();
        let stack = &self.stack;
        if is_path(stack, &["filename"]) {
            self.filename = Some(value);
        } else if is_path(stack, &["size", "width"]) {
            self.width = Some(parse_size("size/width", &value)?);
        } else if is_path(stack, &["size", "height"]) {
            self.height = Some(parse_size("size/height", &value)?);
        } else if let Some(obj) = self.current.as_mut() {
            if is_path(stack, &["object", "name"]) {
                obj.name = Some(value);
            } else if is_path(stack, &["object", "difficult"]) {
                obj.difficult = match value.as_str() {
                    "" | "0" => false,
                    "1" => true,
                    other => {
                        return Err(format!(
                            "object[{obj_index}]: <difficult> is `{other}`, expected 0 or 1"
                        ))
                    }
                };
            } else if stack.len() == 4 && stack[1] == "object" && stack[2] == "bndbox" {
                let field = stack[3].as_str();
                let slot = match field {
                    "xmin" => Some(&mut obj.xmin),
                    "ymin" => Some(&mut obj.ymin),
                    "xmax" => Some(&mut obj.xmax),
                    "ymax" => Some(&mut obj.ymax),
                    _ => None,
                };
                if let Some(slot) = slot {
                    *slot = Some(parse_coord(obj_index, field, &value)?);
                }
            } else if is_path(stack, &["object"]) {
                let obj = self.current.take().unwrap_or_default();
                self.objects.push(finish_object(obj_index, obj)?);
            }
        }
        self.stack.pop();
        self.leaf_text.clear();
        Ok(())
    }

    /// The annotation, once the whole `text` was read.
    fn finish(self, text: &str) -> std::result::Result<VocAnnotation, String> {
        if !self.saw_root {
            let (line, col) = line_col(text, text.len());
            return Err(format!(
                "malformed XML at line {line}, column {col}: end of file without a root element"
            ));
        }
        Ok(VocAnnotation {
            filename: self.filename.unwrap_or_default(),
            width: self.width.ok_or("missing <size><width>")?,
            height: self.height.ok_or("missing <size><height>")?,
            objects: self.objects,
        })
    }
}

/// The text of a character or predefined entity reference (`&#38;`, `&amp;`).
fn resolve_reference(r: &quick_xml::events::BytesRef) -> std::result::Result<String, String> {
    let resolved = if r.is_char_ref() {
        r.resolve_char_ref().ok().flatten().map(String::from)
    } else {
        quick_xml::escape::resolve_predefined_entity(r).map(String::from)
    };
    resolved.ok_or_else(|| format!("unknown entity reference `&{};`", &**r))
}

/// `stack` is `[root, rest...]` exactly (the root's own name is not checked: `<annotation>` in
/// VOC, but some tools write other roots).
fn is_path(stack: &[String], rest: &[&str]) -> bool {
    stack.len() == rest.len() + 1 && stack[1..].iter().zip(rest).all(|(a, b)| a == b)
}

fn parse_size(field: &str, value: &str) -> std::result::Result<u32, String> {
    // Some tools write sizes as "1280.0"; accept integral floats, reject anything else.
    if let Ok(v) = value.parse::<u32>() {
        return Ok(v);
    }
    match value.parse::<f64>() {
        Ok(v) if v.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&v) => Ok(v as u32),
        _ => Err(format!(
            "<{field}> is `{value}`, expected a non-negative integer"
        )),
    }
}

fn parse_coord(obj_index: usize, field: &str, value: &str) -> std::result::Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!(
            "object[{obj_index}]: <bndbox><{field}> is `{value}`, expected a number"
        )),
    }
}

fn finish_object(index: usize, obj: PartialObject) -> std::result::Result<VocObject, String> {
    let missing = |what: &str| format!("object[{index}]: missing {what}");
    Ok(VocObject {
        name: obj.name.ok_or_else(|| missing("<name>"))?,
        xmin: obj.xmin.ok_or_else(|| missing("<bndbox><xmin>"))?,
        ymin: obj.ymin.ok_or_else(|| missing("<bndbox><ymin>"))?,
        xmax: obj.xmax.ok_or_else(|| missing("<bndbox><xmax>"))?,
        ymax: obj.ymax.ok_or_else(|| missing("<bndbox><ymax>"))?,
        difficult: obj.difficult,
    })
}

/// `12` for 12.0, `12.5` for 12.5 (shortest round-trip form otherwise).
fn format_coord(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}
