//! `lopper import MODEL.onnx --out MODEL.lop [--format auto|dense|csr|...]`: an ONNX model
//! becomes a `.lop` file. Weights keep their values; `auto` stores each in its smallest
//! encoding, so an ONNX model pruned elsewhere (exact zeros) arrives sparse. Every other model
//! command also takes the `.onnx` file directly, importing it in memory.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lopper_kernels::Dtype;
use lopper_model::StorageChoice;
use serde::Serialize;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX model (opsets 11 to 21; one float input whose first dimension is the batch).
    pub model: PathBuf,
    /// Output .lop file.
    #[arg(long)]
    pub out: PathBuf,
    /// Storage per weight: auto (smallest encoding), dense, csr, csr-delta8, or bsrRxC.
    #[arg(long, default_value = "auto")]
    pub format: StorageChoice,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct ImportReport {
    pub model: String,
    pub out: String,
    pub input: String,
    pub input_shape: Vec<usize>,
    pub output: String,
    pub output_shape: Vec<usize>,
    /// lopper nodes per op.
    pub ops: BTreeMap<String, usize>,
    pub weights_total: usize,
    pub weights_nonzero: usize,
    pub file_bytes: u64,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if !lopper_model::import::is_onnx(&args.model) {
        anyhow::bail!(
            "{}: lopper import takes an .onnx file (Hugging Face folders are read directly by \
             embed, prune and bench)",
            args.model.display()
        );
    }
    let loaded = super::model_io::load(&args.model)?;
    let model = loaded.model.reencoded(args.format, Dtype::F32)?;
    let bytes = model.write(&args.out)?;
    let g = &model.graph;
    let mut ops = BTreeMap::new();
    for n in &g.nodes {
        *ops.entry(n.op.name().to_string()).or_default() += 1;
    }
    let (total, nonzero, _) = model.weight_stats();
    let r = ImportReport {
        model: args.model.display().to_string(),
        out: args.out.display().to_string(),
        input: g.input.name.clone(),
        input_shape: g.input.shape.clone(),
        output: g.output.clone(),
        output_shape: model.shapes[&g.output].clone(),
        ops,
        weights_total: total,
        weights_nonzero: nonzero,
        file_bytes: bytes,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let ops: Vec<String> = r.ops.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!(
            "{} -> {}: input '{}' [N, {}], output '{}' [N, {}]; {} nodes ({}); {} of {} weights \
             nonzero; {} bytes",
            r.model,
            r.out,
            r.input,
            dims(&r.input_shape),
            r.output,
            dims(&r.output_shape),
            g.nodes.len(),
            ops.join(", "),
            nonzero,
            total,
            bytes
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
