//! `dualnet import MODEL.onnx --out DIR`: an ONNX model as a readable `.net` spec (`DIR/<name>.net`) and its
//! weights (`DIR/<name>.safetensors`, PyTorch layout). The spec is checked before anything is written.

use std::path::PathBuf;

use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The ONNX model.
    pub model: PathBuf,
    /// The folder to write the spec and the weights into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let imported = crate::onnx::import_file(&args.model)?;
    // Check the spec and the weights together, as every later command will load them.
    imported.graph_and_weights(candle_core::DType::F32, &candle_core::Device::Cpu)?;
    let (spec, weights) = imported.write(&args.out)?;
    println!(
        "imported `{}` (crc32 {:08x}): input {:?}, {} outputs -> {} and {}",
        args.model.display(),
        imported.crc32,
        imported.input_shape,
        imported.outputs,
        spec.display(),
        weights.display()
    );
    Ok(())
}
