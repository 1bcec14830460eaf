//! `dualnet init SPEC --seed N --out weights.safetensors [--dtype f32|f64]`: PyTorch-default initialisation.

use std::path::PathBuf;

use candle_core::Device;

use crate::error::Result;
use crate::weights::Weights;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub spec: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: super::DTypeArg,
}

pub fn run(args: &Args) -> Result<()> {
    let g = super::load_graph(&args.spec)?;
    let w = Weights::init(&g, args.seed, args.dtype.dtype(), &Device::Cpu)?;
    w.save(&g, &args.out)?;
    let n: usize = g.weight_specs().iter().map(|(_, s)| s.shape.iter().product::<usize>()).sum();
    println!("wrote {} ({} tensors, {n} parameters, seed {})", args.out.display(), g.weight_specs().len(), args.seed);
    Ok(())
}
