//! The notebook cache: each completed cell's variables, printed output and files, on disk.
//!
//! Layout (a `.ssod-cache/` folder next to the script, so a script's cache travels with it and
//! runs from any working directory find it; `ssod run --cache DIR` puts it elsewhere, e.g. on a
//! cluster's shared file system):
//!
//! ```text
//! .ssod-cache/
//!   cells/<key>/scope.json     the scope's variables after the cell (see [`Saved`])
//!   cells/<key>/files/...      files the cell wrote into its run folder (show, write_csv, ablate)
//!   cells/<key>/cell.json      the cell's record (title, output, time, params read); written last,
//!                              so an entry without it is incomplete and ignored
//!   objects/<sha256>.safetensors   tensors and model weights, content-addressed (shared by cells)
//!   ablate/<key>.json          one finished ablation point each
//!   ablate/<key>.claim         a point some process is computing (see [`crate::script::claim`])
//!   ablate/<key>.partial/      that point's work folder (checkpoints of an unfinished point)
//! ```
//!
//! Several processes may use one cache at once (shards of an ablation, docs/cluster.md): every
//! file and cell entry is written under a unique temporary name and published by one rename
//! ([`crate::script::shared_fs`]), so readers see complete entries or none.
//!
//! A cell's key is the SHA-256 of: the ssod version, the device, the `--set` values (sorted), the
//! previous cell's key and the cell's title and source. So editing cell 3 changes the keys of
//! cells 3, 4, ... and nothing before; changing a `--set` value changes every key.
//!
//! Values: plain values (unit, bool, int, float, string, char, blob, arrays and maps of them) are
//! JSON; other types go through a [`CacheCodec`] registered by type ([`register_codec`]):
//! `Tensor` and `Model` are built in. A variable whose type has no codec makes the cell
//! uncacheable (the notebook prints a note and runs on).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use rhai::{Dynamic, Scope};
use serde::{Deserialize, Serialize};

use crate::atomic_file::{temp_path_for, unique_suffix, write_atomic};
use crate::digest::hash_bytes;
pub use crate::digest::hash_parts;
use crate::script::api::notebook::OutputItem;
use crate::script::shared_fs::publish_dir;
use crate::{Error, Result};

/// The key of a cell (see the module documentation).
pub fn cell_key(
    prev_key: &str,
    title: &str,
    source: &str,
    params: &BTreeMap<String, String>,
    device: &str,
) -> String {
    let params = serde_json::to_string(params).unwrap_or_default();
    hash_parts(&[
        "ssod-cell-v1",
        crate::VERSION,
        device,
        &params,
        prev_key,
        title,
        source,
    ])
}

/// A value as stored in `scope.json`. Floats are stored as their bits (exact, NaN and inf too).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum Saved {
    Unit,
    Bool(bool),
    Int(i64),
    Float(u64),
    Str(String),
    Char(char),
    Blob(Vec<u8>),
    Array(Vec<Saved>),
    Map(Vec<(String, Saved)>),
    /// A function pointer or closure: the function's name (script functions are defined again
    /// from the cells' sources) and its captured values.
    FnPtr {
        name: String,
        curry: Vec<Saved>,
    },
    /// A value saved by the codec named `codec`, with the codec's own description.
    Custom {
        codec: String,
        data: serde_json::Value,
    },
}

/// Content-addressed files under `objects/`.
pub struct ObjectStore {
    dir: PathBuf,
}

impl ObjectStore {
    pub fn new(dir: PathBuf) -> Self {
        ObjectStore { dir }
    }

    /// Let `write` produce a file at a temporary path, then store it under its SHA-256 (an
    /// identical object already stored is kept); returns the hash.
    pub fn put_with(&self, ext: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        // Unique across hosts and threads: other processes may store objects at the same time.
        // The extension stays last: writers may pick the format by it.
        let tmp = self.dir.join(format!(".tmp-{}.{ext}", unique_suffix()));
        if let Err(e) = write(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let bytes = std::fs::read(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let name = format!("{}.{ext}", hash_bytes(&bytes));
        let dest = self.dir.join(&name);
        if dest.exists() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            std::fs::rename(&tmp, &dest).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(&dest, e)
            })?;
            crate::atomic_file::sync_dir(&self.dir);
        }
        Ok(name)
    }

    /// The path of a stored object (an error if it is missing or the name is not ours).
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(Error::Msg(format!("cache: bad object name `{name}`")));
        }
        let p = self.dir.join(name);
        if !p.is_file() {
            return Err(Error::Msg(format!(
                "cache: object {} is missing",
                p.display()
            )));
        }
        Ok(p)
    }
}

/// Saves and restores values of one custom type. Register one with [`register_codec`] so the
/// notebook cache can keep variables of that type.
pub trait CacheCodec: Send + Sync {
    /// A stable name written into the cache (e.g. "Tensor"); one codec per name.
    fn name(&self) -> &str;
    /// Whether this codec handles the value (usually `v.is::<MyType>()`).
    fn handles(&self, v: &Dynamic) -> bool;
    /// Describe the value as JSON, storing any bulk data in `objects`.
    fn save(&self, v: &Dynamic, objects: &ObjectStore) -> Result<serde_json::Value>;
    /// Rebuild the value from what `save` returned.
    fn load(&self, data: &serde_json::Value, objects: &ObjectStore) -> Result<Dynamic>;
}

fn registry() -> &'static RwLock<Vec<Arc<dyn CacheCodec>>> {
    static REG: OnceLock<RwLock<Vec<Arc<dyn CacheCodec>>>> = OnceLock::new();
    REG.get_or_init(|| {
        let reg = RwLock::new(Vec::new());
        crate::script::api::notebook::register_builtin_codecs(&mut |c| {
            reg.write().unwrap_or_else(|p| p.into_inner()).push(c)
        });
        reg
    })
}

/// Make values handled by `codec` cacheable (replaces a codec of the same name).
pub fn register_codec(codec: Arc<dyn CacheCodec>) {
    let mut reg = registry().write().unwrap_or_else(|p| p.into_inner());
    reg.retain(|c| c.name() != codec.name());
    reg.push(codec);
}

fn codec_for(v: &Dynamic) -> Option<Arc<dyn CacheCodec>> {
    let reg = registry().read().unwrap_or_else(|p| p.into_inner());
    reg.iter().find(|c| c.handles(v)).cloned()
}

fn codec_named(name: &str) -> Option<Arc<dyn CacheCodec>> {
    let reg = registry().read().unwrap_or_else(|p| p.into_inner());
    reg.iter().find(|c| c.name() == name).cloned()
}

/// Why a value cannot be cached.
#[derive(Debug)]
pub struct Uncacheable(pub String);

/// Encode a value; `Err(Uncacheable)` names the first part that has no codec.
pub fn encode(v: &Dynamic, objects: &ObjectStore) -> std::result::Result<Saved, Uncacheable> {
    let v = v.flatten_clone();
    if v.is_unit() {
        return Ok(Saved::Unit);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(Saved::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(Saved::Int(i));
    }
    if let Ok(f) = v.as_float() {
        return Ok(Saved::Float(f.to_bits()));
    }
    if let Ok(c) = v.as_char() {
        return Ok(Saved::Char(c));
    }
    if let Some(s) = v.read_lock::<rhai::ImmutableString>() {
        return Ok(Saved::Str(s.to_string()));
    }
    if let Some(b) = v.read_lock::<rhai::Blob>() {
        return Ok(Saved::Blob(b.clone()));
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a
            .iter()
            .map(|x| encode(x, objects))
            .collect::<std::result::Result<_, _>>()
            .map(Saved::Array);
    }
    if let Some(m) = v.read_lock::<rhai::Map>() {
        return m
            .iter()
            .map(|(k, x)| encode(x, objects).map(|s| (k.to_string(), s)))
            .collect::<std::result::Result<_, _>>()
            .map(Saved::Map);
    }
    if let Some(f) = v.read_lock::<rhai::FnPtr>() {
        return f
            .iter_curry()
            .map(|x| encode(x, objects))
            .collect::<std::result::Result<_, _>>()
            .map(|curry| Saved::FnPtr {
                name: f.fn_name().to_string(),
                curry,
            });
    }
    match codec_for(&v) {
        Some(c) => c
            .save(&v, objects)
            .map(|data| Saved::Custom {
                codec: c.name().to_string(),
                data,
            })
            .map_err(|e| Uncacheable(format!("saving a {} failed: {e}", c.name()))),
        None => Err(Uncacheable(format!(
            "values of type `{}` have no cache codec",
            v.type_name()
        ))),
    }
}

/// Looks up a script-defined function pointer by name (for closures in restored scopes).
pub type FnResolver<'a> = &'a dyn Fn(&str) -> Option<rhai::FnPtr>;

/// Decode a value saved by [`encode`]; `fns` finds closures by name.
pub fn decode(s: &Saved, objects: &ObjectStore, fns: FnResolver) -> Result<Dynamic> {
    Ok(match s {
        Saved::Unit => Dynamic::UNIT,
        Saved::Bool(b) => Dynamic::from_bool(*b),
        Saved::Int(i) => Dynamic::from_int(*i),
        Saved::Float(bits) => Dynamic::from_float(f64::from_bits(*bits)),
        Saved::Str(s) => Dynamic::from(s.clone()),
        Saved::Char(c) => Dynamic::from_char(*c),
        Saved::Blob(b) => Dynamic::from_blob(b.clone()),
        Saved::Array(a) => Dynamic::from_array(
            a.iter()
                .map(|x| decode(x, objects, fns))
                .collect::<Result<_>>()?,
        ),
        Saved::Map(m) => {
            let mut map = rhai::Map::new();
            for (k, x) in m {
                map.insert(k.as_str().into(), decode(x, objects, fns)?);
            }
            Dynamic::from_map(map)
        }
        Saved::FnPtr { name, curry } => {
            let mut f = match rhai::FnPtr::new(name.as_str()) {
                Ok(f) => f,
                // Anonymous functions (closures) have names no script can write: look their
                // definitions up among the cells' functions.
                Err(_) => fns(name).ok_or_else(|| {
                    Error::Msg(format!(
                        "cache: closure `{name}` is not defined by the cells"
                    ))
                })?,
            };
            f.set_curry(
                curry
                    .iter()
                    .map(|x| decode(x, objects, fns))
                    .collect::<Result<Vec<_>>>()?,
            );
            Dynamic::from(f)
        }
        Saved::Custom { codec, data } => match codec_named(codec) {
            Some(c) => c.load(data, objects)?,
            None => {
                return Err(Error::Msg(format!(
                    "cache: no codec `{codec}` is registered in this build"
                )))
            }
        },
    })
}

/// What a cell left behind, besides its variables.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CellRecord {
    pub version: String,
    pub title: String,
    pub output: Vec<OutputItem>,
    /// Files in the run folder the cell wrote (relative paths); copies are in `files/`.
    pub files: Vec<String>,
    pub params_read: BTreeMap<String, String>,
    pub seconds: f64,
    /// The run folder the cell ran in: strings in restored variables that start with it are
    /// moved to the new run's folder (a `let d = run_dir();` keeps pointing at this run).
    #[serde(default)]
    pub run_dir: String,
}

#[derive(Serialize, Deserialize)]
struct ScopeFile {
    /// (name, constant, value), oldest first.
    vars: Vec<(String, bool, Saved)>,
}

/// The cell cache of one script.
pub struct CellCache {
    root: PathBuf,
    pub objects: ObjectStore,
}

impl CellCache {
    /// The cache of `script`: `.ssod-cache/` in the script's folder.
    pub fn for_script(script: &Path) -> Self {
        let dir = script
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Self::at(dir.join(".ssod-cache"))
    }

    pub fn at(root: PathBuf) -> Self {
        let objects = ObjectStore::new(root.join("objects"));
        CellCache { root, objects }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry(&self, key: &str) -> PathBuf {
        self.root.join("cells").join(key)
    }

    /// Whether a complete entry exists for `key`.
    pub fn has(&self, key: &str) -> bool {
        self.entry(key).join("cell.json").is_file()
    }

    pub fn load_record(&self, key: &str) -> Result<CellRecord> {
        let p = self.entry(key).join("cell.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        serde_json::from_str(&text).map_err(|e| Error::format(p.display(), e.to_string()))
    }

    /// The variables after the cell, oldest first.
    pub fn load_scope(&self, key: &str, fns: FnResolver) -> Result<Vec<(String, bool, Dynamic)>> {
        let p = self.entry(key).join("scope.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        let file: ScopeFile =
            serde_json::from_str(&text).map_err(|e| Error::format(p.display(), e.to_string()))?;
        file.vars
            .into_iter()
            .map(|(name, constant, s)| {
                decode(&s, &self.objects, fns)
                    .map(|v| (name.clone(), constant, v))
                    .map_err(|e| Error::Msg(format!("cache: variable `{name}`: {e}")))
            })
            .collect()
    }

    /// Copy the cell's cached files into `run_dir` (never over an existing file).
    pub fn restore_files(&self, key: &str, record: &CellRecord, run_dir: &Path) -> Result<()> {
        for rel in &record.files {
            let src = self.entry(key).join("files").join(rel);
            let dest = run_dir.join(rel);
            if dest.exists() {
                continue;
            }
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
            // Through a temporary name: a run killed while restoring leaves no half file.
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            crate::atomic_file::write_atomic(&dest, &bytes)?;
        }
        Ok(())
    }

    /// Save a completed cell. `Ok(Err(reason))` when a variable cannot be cached.
    pub fn save(
        &self,
        key: &str,
        scope: &Scope,
        record: &CellRecord,
        run_dir: &Path,
    ) -> Result<std::result::Result<(), Uncacheable>> {
        // The latest binding of each name (shadowed ones are unreachable).
        let mut latest: Vec<(String, bool, Dynamic)> = Vec::new();
        for (name, constant, value) in scope.iter() {
            latest.retain(|(n, _, _)| n != name);
            latest.push((name.to_string(), constant, value));
        }
        let mut vars = Vec::new();
        for (name, constant, value) in latest {
            match encode(&value, &self.objects) {
                Ok(s) => vars.push((name, constant, s)),
                Err(Uncacheable(why)) => {
                    return Ok(Err(Uncacheable(format!("variable `{name}`: {why}"))))
                }
            }
        }
        // The entry is built in a temporary folder and published whole (replacing an older
        // entry), so a process reading it at the same time never sees a mix.
        let dir = self.entry(key);
        let tmp = temp_path_for(&dir);
        let built = (|| -> Result<()> {
            std::fs::create_dir_all(tmp.join("files")).map_err(|e| Error::io(&tmp, e))?;
            for rel in &record.files {
                let src = run_dir.join(rel);
                let dest = tmp.join("files").join(rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                }
                std::fs::copy(&src, &dest).map_err(|e| Error::io(&src, e))?;
            }
            write_atomic(
                &tmp.join("scope.json"),
                to_json(&ScopeFile { vars })?.as_bytes(),
            )?;
            write_atomic(&tmp.join("cell.json"), to_json(record)?.as_bytes())
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        publish_dir(&tmp, &dir)?;
        Ok(Ok(()))
    }

    /// The file of a finished ablation point.
    pub fn ablation_point(&self, key: &str) -> PathBuf {
        self.root.join("ablate").join(format!("{key}.json"))
    }

    /// The claim file of an ablation point some process is computing.
    pub fn ablation_claim(&self, key: &str) -> PathBuf {
        self.root.join("ablate").join(format!("{key}.claim"))
    }
}

/// JSON text of a value, as a library error on failure.
pub fn to_json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Msg(format!("cache: {e}")))
}
