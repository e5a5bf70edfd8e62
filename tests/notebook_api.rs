//! The Rust side other API authors use: output paths in the current run folder, recording
//! files and images, and cache codecs for their own types.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rhai::Dynamic;
use ssod::script::api::notebook::{
    output_path, record_output, set_current, CellState, OutputItem, RunContext,
};
use ssod::script::cache::{decode, encode, register_codec, CacheCodec, ObjectStore, Saved};

#[test]
fn output_paths_resolve_in_the_current_run_and_files_are_recorded() {
    let dir = std::env::temp_dir().join(format!("ssod_nb_api_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ctx = Arc::new(RunContext {
        params: BTreeMap::new(),
        params_read: Mutex::new(BTreeMap::new()),
        run_dir: Some(dir.clone()),
        cache_dir: None,
        cell: Mutex::new(CellState::default()),
        echo: false,
        fresh: false,
        device: ssod::tensor::Device::Cpu,
        shard: None,
    });
    set_current(Some(ctx.clone()));
    let p = output_path("plots/loss.png");
    assert_eq!(p, dir.join("plots/loss.png"));
    assert_eq!(
        output_path("/abs/x.csv"),
        std::path::PathBuf::from("/abs/x.csv")
    );
    record_output(&p, true);
    record_output(&dir.join("metrics.csv"), false);
    {
        let cell = ctx.cell();
        assert_eq!(cell.files, ["plots/loss.png", "metrics.csv"]);
        assert_eq!(cell.output, [OutputItem::Image("plots/loss.png".into())]);
    }
    set_current(None);
    assert_eq!(output_path("a.csv"), std::path::PathBuf::from("a.csv"));
}

/// A type of another API file, made cacheable by a codec.
#[derive(Clone, Debug, PartialEq)]
struct Point {
    x: i64,
    y: i64,
}

struct PointCodec;

impl CacheCodec for PointCodec {
    fn name(&self) -> &str {
        "test.Point"
    }
    fn handles(&self, v: &Dynamic) -> bool {
        v.is::<Point>()
    }
    fn save(&self, v: &Dynamic, _: &ObjectStore) -> ssod::Result<serde_json::Value> {
        let p = v.clone().cast::<Point>();
        Ok(serde_json::json!([p.x, p.y]))
    }
    fn load(&self, data: &serde_json::Value, _: &ObjectStore) -> ssod::Result<Dynamic> {
        let x = data[0].as_i64().unwrap_or(0);
        let y = data[1].as_i64().unwrap_or(0);
        Ok(Dynamic::from(Point { x, y }))
    }
}

#[test]
fn custom_types_plug_in_with_a_codec() {
    let objects = ObjectStore::new(std::env::temp_dir().join("ssod_nb_api_objects"));
    let v = Dynamic::from_array(vec![
        Dynamic::from(Point { x: 1, y: -2 }),
        Dynamic::from_int(3),
    ]);
    // Without a codec: uncacheable, with the type named.
    #[derive(Clone)]
    struct Unknown;
    let err = encode(&Dynamic::from(Unknown), &objects).unwrap_err();
    assert!(err.0.contains("Unknown"), "{}", err.0);

    register_codec(Arc::new(PointCodec));
    let saved = encode(&v, &objects).unwrap();
    let json = serde_json::to_string(&saved).unwrap();
    let back: Saved = serde_json::from_str(&json).unwrap();
    let restored = decode(&back, &objects, &|_| None).unwrap();
    let arr = restored.cast::<rhai::Array>();
    assert_eq!(arr[0].clone().cast::<Point>(), Point { x: 1, y: -2 });
    assert_eq!(arr[1].as_int().unwrap(), 3);
}
