//! ONNX import and export on graphs lopper's authors did not write: the fixtures in
//! `tests/fixtures/onnx` were exported by PyTorch (`scripts/make-onnx-fixtures.py`), with ONNX
//! Runtime's outputs for a batch of three inputs. lopper must match them as imported, after a
//! round trip through `.lop`, and after writing ONNX and importing that again. Hostile files get
//! errors that name what is wrong.

use std::path::{Path, PathBuf};

use lopper_model::import::onnx::import_model;
use lopper_model::import::read_any;
use lopper_model::oneshot::graph::{prune_graph, GraphTargets};
use lopper_model::oneshot::{Method, PruneOptions, Target};
use lopper_model::onnx::proto;
use lopper_model::runtime::plan::{make_plan, PlanMode};
use lopper_model::{Executor, Model};
use prost::Message;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/onnx")
        .join(name)
}

/// A little-endian f32 `.npy` (what the fixture script writes): `(shape, values)`.
fn npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).expect("fixture");
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).expect("header");
    assert!(
        header.contains("'<f4'") && header.contains("False"),
        "{header}"
    );
    let shape: Vec<usize> = header[header.find('(').unwrap() + 1..header.find(')').unwrap()]
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let v = b[10 + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, v)
}

fn run(model: &Model, x: &[f32]) -> Vec<f32> {
    let n = x.len() / model.graph.input_len();
    let plan = make_plan(model, "test", n, 1, PlanMode::Stored).expect("plan");
    Executor::new(model, &plan)
        .expect("executor")
        .run(x)
        .expect("run")
        .to_vec()
}

/// Within 1e-4, relative where values are large.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * b.abs().max(1.0);
        assert!(
            (a - b).abs() <= tol,
            "{what}: output {i} is {a}, ONNX Runtime gave {b}"
        );
    }
}

const FIXTURES: [&str; 3] = ["mlp", "mobilenet_block", "resnet_stem"];

#[test]
fn torch_exports_match_onnx_runtime_as_imported_and_after_round_trips() {
    for name in FIXTURES {
        let (model, _) = read_any(&fixture(&format!("{name}.onnx"))).expect("import");
        let (shape, x) = npy(&fixture(&format!("{name}.input.npy")));
        let (_, want) = npy(&fixture(&format!("{name}.expected.npy")));
        assert_eq!(shape[1..], model.graph.input.shape[..], "{name}");
        let got = run(&model, &x);
        assert_close(&got, &want, &format!("{name} as imported"));
        // One example at a time gives the same outputs as the batch.
        let f = model.graph.input_len();
        let one: Vec<f32> = x.chunks(f).flat_map(|e| run(&model, e)).collect();
        assert_close(&one, &want, &format!("{name} at batch 1"));

        let back = Model::from_bytes(&model.to_bytes().expect("bytes")).expect("read .lop");
        assert_eq!(run(&back, &x), got, "{name} after .lop");

        let onnx = lopper_model::export::onnx::to_onnx(&model).expect("export");
        let reread = import_model(
            &proto::ModelProto::decode(&onnx.encode_to_vec()[..]).expect("decode"),
            Path::new("."),
            name,
        )
        .expect("re-import");
        assert_eq!(reread.graph.input.name, "input");
        assert_eq!(reread.graph.output, "output");
        assert_close(&run(&reread, &x), &want, &format!("{name} after export"));
    }
}

#[test]
fn the_mobilenet_block_keeps_its_depthwise_and_dilated_convolutions() {
    let (model, _) = read_any(&fixture("mobilenet_block.onnx")).expect("import");
    let convs: Vec<(usize, [usize; 2])> = model
        .graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            lopper_model::Op::Conv2d {
                groups, dilation, ..
            } => Some((groups, dilation)),
            _ => None,
        })
        .collect();
    assert_eq!(convs.iter().filter(|c| c.0 == 64).count(), 2, "{convs:?}");
    assert_eq!(
        convs.iter().filter(|c| c.1 == [2, 2]).count(),
        1,
        "{convs:?}"
    );
    // Folded BatchNorms leave no batchnorm node; the view(x.size(0), -1) chain is one flatten.
    let ops: Vec<&str> = model.graph.nodes.iter().map(|n| n.op.name()).collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "flatten").count(),
        1,
        "{ops:?}"
    );
    assert_eq!(ops.iter().filter(|o| **o == "clip").count(), 5, "{ops:?}");
}

#[test]
fn the_resnet_stem_keeps_its_padded_max_pool() {
    let (model, _) = read_any(&fixture("resnet_stem.onnx")).expect("import");
    let pools: Vec<[usize; 2]> = model
        .graph
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            lopper_model::Op::MaxPool { padding, .. } => Some(padding),
            _ => None,
        })
        .collect();
    assert_eq!(pools, vec![[1, 1]]);
    // Stem 40 -> 20 (7x7 stride 2 pad 3), pool 20 -> 10 (3x3 stride 2 pad 1).
    let pool = model
        .graph
        .nodes
        .iter()
        .find(|n| n.op.name() == "maxpool")
        .unwrap();
    assert_eq!(model.shapes[&pool.output], vec![16, 10, 10]);
}

#[test]
fn any_graph_prunes_to_the_target_with_every_method() {
    let (model, _) = read_any(&fixture("mobilenet_block.onnx")).expect("import");
    let (_, x) = npy(&fixture("mobilenet_block.input.npy"));
    for method in [Method::Magnitude, Method::Wanda, Method::Sparsegpt] {
        let opts = PruneOptions::new(method, Target::Unstructured(0.5));
        let calib = (method != Method::Magnitude).then_some(&x[..]);
        let (pruned, recs) =
            prune_graph(&model, calib, &opts, &GraphTargets::default(), &mut |_| {})
                .expect("prune");
        for r in &recs {
            let general = r.note.is_some();
            if general {
                assert_eq!(r.sparsity, 0.0, "{method:?} {}", r.name);
            } else {
                assert!(
                    (r.sparsity - 0.5).abs() < 0.02,
                    "{method:?} {}: {}",
                    r.name,
                    r.sparsity
                );
            }
        }
        assert_eq!(recs.iter().filter(|r| r.note.is_some()).count(), 3);
        let y = run(&pruned, &x);
        assert!(y.iter().all(|v| v.is_finite()));
    }
    // Skips and per-layer targets, by node name.
    let targets = GraphTargets {
        skip: vec!["/fc/Gemm".into()],
        per_layer: [("/stem/stem.0/Conv".to_string(), Target::Unstructured(0.25))].into(),
    };
    let opts = PruneOptions::new(Method::Magnitude, Target::Unstructured(0.75));
    let (_, recs) = prune_graph(&model, None, &opts, &targets, &mut |_| {}).expect("prune");
    let by = |n: &str| recs.iter().find(|r| r.name == n).expect("layer").sparsity;
    assert_eq!(by("/fc/Gemm"), 0.0);
    assert!((by("/stem/stem.0/Conv") - 0.25).abs() < 0.02);
    assert!((by("/b1/block/block.0/Conv") - 0.75).abs() < 0.02);
    // N:M: a 27-input stem is not a multiple of 4 and stays dense, with a note.
    let opts = PruneOptions::new(Method::Magnitude, Target::Nm { n: 2, m: 4 });
    let (_, recs) =
        prune_graph(&model, None, &opts, &GraphTargets::default(), &mut |_| {}).expect("prune");
    let stem = recs.iter().find(|r| r.name == "/stem/stem.0/Conv").unwrap();
    assert!(
        stem.note.as_deref().unwrap_or("").contains("multiple"),
        "{stem:?}"
    );
    let bad = GraphTargets {
        skip: vec!["nope".into()],
        ..Default::default()
    };
    let e = prune_graph(&model, None, &opts, &bad, &mut |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("'nope' names no weight layer"),
        "{e}"
    );
    let wanda = PruneOptions::new(Method::Wanda, Target::Unstructured(0.5));
    let e = prune_graph(&model, None, &wanda, &GraphTargets::default(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("needs calibration"), "{e}");
}

/// A one-node model `input [N, 4] -> op -> output`, opset `opset`.
fn tiny(op: &str, opset: i64, extra_inputs: usize) -> proto::ModelProto {
    let mut m = proto::ModelProto::decode(
        &lopper_model::export::onnx::to_onnx(&read_any(&fixture("mlp.onnx")).unwrap().0)
            .unwrap()
            .encode_to_vec()[..],
    )
    .unwrap();
    m.opset_import[0].version = Some(opset);
    let g = m.graph.as_mut().unwrap();
    g.node.truncate(1);
    g.node[0].op_type = Some(op.into());
    g.node[0].name = Some("the_node".into());
    g.node[0].attribute.clear();
    g.node[0].input.truncate(1 + extra_inputs);
    g.node[0].output = vec!["output".into()];
    m
}

fn import_err(m: &proto::ModelProto) -> String {
    match import_model(m, Path::new("."), "t") {
        Ok(_) => panic!("imported"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_and_malformed_models_are_refused_with_reasons() {
    let e = import_err(&tiny("LSTM", 17, 0));
    assert!(
        e.contains("the_node") && e.contains("LSTM") && e.contains("opset 17"),
        "{e}"
    );
    let e = import_err(&tiny("Relu", 9, 0));
    assert!(e.contains("opset 9 is not supported"), "{e}");
    let e = import_err(&tiny("Relu", 22, 0));
    assert!(e.contains("opset 22"), "{e}");
    let mut two = tiny("Relu", 17, 0);
    let extra = two.graph.as_ref().unwrap().input[0].clone();
    let mut extra2 = extra.clone();
    extra2.name = Some("second".into());
    two.graph.as_mut().unwrap().input.push(extra2);
    assert!(
        import_err(&two).contains("2 inputs"),
        "{}",
        import_err(&two)
    );
    let mut dom = tiny("FusedMatMul", 17, 0);
    dom.graph.as_mut().unwrap().node[0].domain = Some("com.microsoft".into());
    assert!(import_err(&dom).contains("com.microsoft"));
    // A Gemm whose weight initializer holds fewer values than its dims say.
    let mut short =
        proto::ModelProto::decode(&std::fs::read(fixture("mlp.onnx")).unwrap()[..]).unwrap();
    let init = &mut short.graph.as_mut().unwrap().initializer[0];
    let raw = init.raw_data.take().unwrap();
    init.raw_data = Some(raw.slice(..raw.len() - 4));
    let e = import_err(&short);
    assert!(e.contains("bytes of data"), "{e}");

    let dir = tempdir("onnx-garbage");
    let p = dir.join("garbage.onnx");
    std::fs::write(&p, b"\x08\x07this is not protobuf at all\xff\xff").unwrap();
    let e = read_any(&p).unwrap_err().to_string();
    assert!(e.contains("garbage.onnx") && e.contains("ONNX"), "{e}");
    let p = dir.join("truncated.onnx");
    let full = std::fs::read(fixture("mlp.onnx")).unwrap();
    std::fs::write(&p, &full[..full.len() / 2]).unwrap();
    let e = read_any(&p).unwrap_err().to_string();
    assert!(e.contains("truncated.onnx"), "{e}");
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lopper-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn external_data_is_read_from_the_model_folder_only() {
    let dir = tempdir("onnx-external");
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("mlp.onnx")).unwrap()[..]).unwrap();
    let mut blob = Vec::new();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let raw = t.raw_data.take().unwrap();
        let kv = |k: &str, v: String| proto::StringStringEntryProto {
            key: Some(k.into()),
            value: Some(v),
        };
        t.external_data = vec![
            kv("location", "weights.bin".into()),
            kv("offset", blob.len().to_string()),
            kv("length", raw.len().to_string()),
        ];
        t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
        blob.extend_from_slice(&raw);
    }
    std::fs::write(dir.join("weights.bin"), &blob).unwrap();
    let path = dir.join("mlp_ext.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let (model, _) = read_any(&path).expect("external data");
    let (_, x) = npy(&fixture("mlp.input.npy"));
    let (_, want) = npy(&fixture("mlp.expected.npy"));
    assert_close(&run(&model, &x), &want, "external data");

    // Locations outside the folder are refused; a short data file is an error naming it.
    for t in &mut m.graph.as_mut().unwrap().initializer {
        t.external_data[0].value = Some("../weights.bin".into());
    }
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let e = read_any(&path).unwrap_err().to_string();
    assert!(e.contains("relative path inside the model's folder"), "{e}");
    for t in &mut m.graph.as_mut().unwrap().initializer {
        t.external_data[0].value = Some("weights.bin".into());
    }
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    std::fs::write(dir.join("weights.bin"), &blob[..blob.len() / 2]).unwrap();
    let e = read_any(&path).unwrap_err().to_string();
    assert!(e.contains("passes the end of 'weights.bin'"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn f16_initializers_are_widened() {
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("mlp.onnx")).unwrap()[..]).unwrap();
    for t in &mut m.graph.as_mut().unwrap().initializer {
        let raw = t.raw_data.take().unwrap();
        let h: Vec<u8> = raw
            .chunks_exact(4)
            .flat_map(|c| {
                half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .to_bits()
                    .to_le_bytes()
            })
            .collect();
        t.raw_data = Some(h.into());
        t.data_type = Some(proto::tensor_proto::DataType::Float16 as i32);
    }
    let model = import_model(&m, Path::new("."), "f16").expect("f16 import");
    let (_, x) = npy(&fixture("mlp.input.npy"));
    let (_, want) = npy(&fixture("mlp.expected.npy"));
    // Half precision weights: close to the f32 model, not equal.
    let got = run(&model, &x);
    for (a, b) in got.iter().zip(&want) {
        assert!((a - b).abs() < 2e-2, "{a} vs {b}");
    }
}
